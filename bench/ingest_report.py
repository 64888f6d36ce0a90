"""The figures of ``bench/ingest.py``: one flat dict for the JSON line, and the markdown
table that goes to docs/benchmarks.md."""

from __future__ import annotations

import argparse
import os
from typing import Any

from bench.ingest_inputs import Library

FIVE_MILLION = 5_000_000
WORKER_MACHINE_CORES = 16
TARGETS = {  # issue 16
    "ratio_vs_floor_throughput": (">=", 0.85),
    "scan_paths_per_s": (">=", 20_000),
    "rescan_paths_per_s": (">=", 50_000),
    "scanner_peak_rss_mib": ("<=", 150),
    "pickup_p99_ms": ("<=", 100),
}


def summarize(
    opts: argparse.Namespace, library: Library | None, parts: dict[str, Any]
) -> dict[str, Any]:
    """Every figure, flat, for the JSON line (and the table)."""
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {"cores": cores, "workers": opts.workers}
    if library is not None:
        out.update(
            images=library.count,
            mean_megapixels=round(library.mean_megapixels, 2),
            library_mb=round(library.bytes / 1e6, 1),
            formats=library.formats,
        )
    floor = parts.get("floor")
    if floor is not None:
        out["floor_images_per_s"] = floor["images_per_s"]
        out["floor_images_per_s_whole"] = floor["images_per_s_whole"]
        out["floor_runs_images_per_s"] = floor["runs"]
        for key in ("floor_cpu_ms_per_image", "catalog_cpu_ms_per_image", "imaging_cpu_ratio"):
            out[key] = floor[key]
    for store in ("local", "s3"):
        result = parts.get(store)
        if result is None:
            continue
        ips = result["images_per_s"]
        out[f"{store}_images_per_s"] = ips
        out[f"{store}_images_per_s_whole"] = result["images_per_s_whole"]
        out[f"{store}_indexed"] = result["indexed"]
        out[f"{store}_failed"] = sum(result["failed_by_code"].values())
        out[f"{store}_by_worker"] = result["by_worker"]
        out[f"{store}_worker_peak_rss_mib"] = result["worker_peak_tree_mib"]
        out[f"{store}_worker_main_peak_rss_mib"] = result["worker_peak_main_mib"]
        out[f"{store}_imaging_process_peak_rss_mib"] = result["worker_peak_child_mib"]
        out[f"{store}_cpu_s_per_image"] = result["cpu_s_per_image"]
        out[f"{store}_worker_main_cpu_s_per_image"] = result["main_cpu_s_per_image"]
        if "objects" in result:
            out[f"{store}_objects"] = result["objects"]
        around = result.get("floor_around")
        if around is not None:
            out[f"{store}_floor_images_per_s"] = around["images_per_s"]
            ratios = result.get("ratios") or [round(ips / around["images_per_s"], 3)]
            wholes = result.get("ratios_whole") or [
                round(result["images_per_s_whole"] / around["images_per_s_whole"], 3)
            ]
            out[f"{store}_ratio_runs"] = ratios
            out[f"{store}_ratio_vs_floor_throughput"] = round(sum(ratios) / len(ratios), 3)
            out[f"{store}_ratio_vs_floor_throughput_whole"] = round(sum(wholes) / len(wholes), 3)
    headline = next((s for s in opts.stores if s in parts), None)
    if headline is not None:
        ips = out[f"{headline}_images_per_s"]
        out["headline_store"] = headline
        out["images_per_s_all_cores"] = ips
        out["images_per_hour_per_core"] = round(ips * 3600 / cores)
        if ips:
            out["projected_5m_hours_this_machine"] = round(FIVE_MILLION / ips / 3600, 1)
            out["projected_5m_hours_16_core_worker"] = round(
                FIVE_MILLION / (ips / cores * WORKER_MACHINE_CORES) / 3600, 1
            )
        out["worker_peak_rss_mib"] = out[f"{headline}_worker_peak_rss_mib"]
        if f"{headline}_ratio_vs_floor_throughput" in out:
            out["ratio_vs_floor_throughput"] = out[f"{headline}_ratio_vs_floor_throughput"]
    scan = parts.get("scan")
    if scan is not None:
        out.update(
            tree_paths=scan["scan"]["paths"],
            scan_paths_per_s=scan["scan"]["paths_per_s"],
            scan_seconds=scan["scan"]["seconds"],
            scan_first_batch_after_s=scan["scan"]["first_batch_after_s"],
            scan_queued=scan["scan"]["queued"],
            rescan_paths_per_s=scan["rescan"]["paths_per_s"],
            rescan_seconds=scan["rescan"]["seconds"],
            rescan_queued=scan["rescan"]["queued"],
            scan_scanner_cpu_s=scan["scan"]["scanner_cpu_s"],
            scan_postgres_cpu_s=scan["scan"]["postgres_cpu_s"],
            rescan_scanner_cpu_s=scan["rescan"]["scanner_cpu_s"],
            rescan_postgres_cpu_s=scan["rescan"]["postgres_cpu_s"],
            scanner_peak_rss_mib=scan["scanner"]["peak_main_mib"],
            scanner_peak_tree_rss_mib=scan["scanner"]["peak_tree_mib"],
        )
        if "pickup" in scan:
            pick = scan["pickup"]
            out.update(
                pickup_uploads=pick["uploads"],
                pickup_p50_ms=pick["p50_ms"],
                pickup_p99_ms=pick["p99_ms"],
                pickup_max_ms=pick["max_ms"],
                pickup_backlog_batches=pick["backlog_batches_before"],
                pickup_backlog_batches_after=pick["backlog_batches_after"],
            )
    if "busy" in parts:
        idle, during = parts["busy"]["idle"], parts["busy"]["during"]
        out.update(
            busy_uploads=during["uploads"],
            busy_pickup_p50_ms=during["p50_ms"],
            busy_pickup_p99_ms=during["p99_ms"],
            busy_upload_run_p50_ms=during["run_p50_ms"],
            idle_pickup_p50_ms=idle["p50_ms"],
            idle_upload_run_p50_ms=idle["run_p50_ms"],
        )
    out["targets"] = {
        name: (out[name] >= bound if op == ">=" else out[name] <= bound)
        for name, (op, bound) in TARGETS.items()
        if out.get(name) is not None
    }
    return out


def table(figures: dict[str, Any], opts: argparse.Namespace) -> str:
    """The markdown of a run for docs/benchmarks.md."""
    rows = ["| figure | value | target |", "|---|---|---|"]

    def row(label: str, key: str, unit: str = "") -> None:
        if figures.get(key) is None:
            return
        target = TARGETS.get(key)
        mark = ""
        if target is not None:
            met = figures["targets"].get(key)
            mark = f"{target[0]} {target[1]:g} ({'met' if met else 'missed'})"
        rows.append(f"| {label} | {figures[key]}{unit} | {mark} |")

    row("floor (bare Pillow loop, all cores), images/s, mean of every run", "floor_images_per_s")
    row("floor runs (before the first ingest, after each), images/s", "floor_runs_images_per_s")
    for store in ("local", "s3"):
        row(f"ingest into {store}, images/s (all cores)", f"{store}_images_per_s")
        row(f"floor around the {store} ingest (runs before and after), images/s",
            f"{store}_floor_images_per_s")  # fmt: skip
        row(f"ingest into {store} / floor around it, each run", f"{store}_ratio_runs")
        row(f"ingest into {store} / floor, mean of the runs", f"{store}_ratio_vs_floor_throughput")
        row(f"ingest into {store}, whole run / floor whole run",
            f"{store}_ratio_vs_floor_throughput_whole")  # fmt: skip
        row(f"ingest into {store}, peak RSS of a worker + its imaging processes",
            f"{store}_worker_peak_rss_mib", " MiB")  # fmt: skip
        row(f"ingest into {store}, peak RSS of one imaging process",
            f"{store}_imaging_process_peak_rss_mib", " MiB")  # fmt: skip
    row("**ratio_vs_floor_throughput**", "ratio_vs_floor_throughput")
    row("floor CPU per image, one thread", "floor_cpu_ms_per_image", " ms")
    row("make_catalog CPU per image, one thread", "catalog_cpu_ms_per_image", " ms")
    row("imaging alone: floor CPU / make_catalog CPU", "imaging_cpu_ratio")
    row("images per hour per core", "images_per_hour_per_core")
    row("5M images on this machine", "projected_5m_hours_this_machine", " h")
    row("5M images on one 16-core worker machine (linear in cores)",
        "projected_5m_hours_16_core_worker", " h")  # fmt: skip
    row("scan, paths/s (first scan)", "scan_paths_per_s")
    row("first batch queued after (s from the scan's start)", "scan_first_batch_after_s")
    row("rescan of the unchanged tree, paths/s", "rescan_paths_per_s")
    row("files queued by the rescan", "rescan_queued")
    row("scanner peak RSS", "scanner_peak_rss_mib", " MiB")
    row("upload pickup p50 behind the backlog", "pickup_p50_ms", " ms")
    row("upload pickup p99 behind the backlog", "pickup_p99_ms", " ms")
    row("upload pickup p50 while one worker ingests photos", "busy_pickup_p50_ms", " ms")
    row("upload pickup p99 while one worker ingests photos", "busy_pickup_p99_ms", " ms")
    row("upload pickup p50, the same worker idle", "idle_pickup_p50_ms", " ms")
    row("upload run time p50 while the worker ingests photos", "busy_upload_run_p50_ms", " ms")
    row("upload run time p50, the same worker idle", "idle_upload_run_p50_ms", " ms")
    notes = []
    if "images" in figures:
        notes.append(
            f"Library: {figures['images']} images ({figures['formats']}), mean "
            f"{figures['mean_megapixels']} MP, {figures['library_mb']} MB; {opts.workers} "
            f"workers (`mediajobs worker`, defaults{_imaging_note(opts)}), batches of "
            f"{opts.batch or 'the default 32'}."
        )
        cpu = [
            f"{store}: {figures[f'{store}_cpu_s_per_image']}"
            for store in ("local", "s3")
            if f"{store}_cpu_s_per_image" in figures
        ]
        if cpu:
            notes.append(
                "CPU seconds per image indexed (each worker with its imaging processes, the "
                "store's server, every Postgres process): " + "; ".join(cpu) + "; of which "
                "the workers' own processes (not their imaging processes): "
                + "; ".join(
                    f"{store}: {figures[f'{store}_worker_main_cpu_s_per_image']}"
                    for store in ("local", "s3")
                    if f"{store}_worker_main_cpu_s_per_image" in figures
                )
                + "."
            )
    if "tree_paths" in figures:
        notes.append(
            f"Scan: {figures['tree_paths']} empty .jpg paths, `--batch 100`, one scan-only "
            f"worker; first scan {figures['scan_seconds']} s ({figures['scan_scanner_cpu_s']} "
            f"CPU s in the scanner, {figures['scan_postgres_cpu_s']} in Postgres), rescan "
            f"{figures['rescan_seconds']} s ({figures['rescan_scanner_cpu_s']} and "
            f"{figures['rescan_postgres_cpu_s']})."
        )
    if "pickup_uploads" in figures:
        notes.append(
            f"Pickup: {figures['pickup_uploads']} uploads one at a time, "
            f"{figures['pickup_backlog_batches']} ingest batches queued at the start and "
            f"{figures['pickup_backlog_batches_after']} at the end; max "
            f"{figures['pickup_max_ms']} ms."
        )
    if "busy_uploads" in figures:
        notes.append(
            f"Busy: {figures['busy_uploads']} uploads (a 1200x900 JPEG each) one at a time to "
            "one worker while it ingests the library (every imaging process busy with ingest "
            "files), against the same worker idle."
        )
    return "\n".join(rows) + ("\n\n" + "\n\n".join(notes) if notes else "")


def _imaging_note(opts: argparse.Namespace) -> str:
    if opts.imaging_processes is None:
        return ": one imaging process per core each"
    why = ": the cores divided among the workers" if getattr(opts, "divided_cores", False) else ""
    return f" except MEDIAJOBS_IMAGING_PROCESSES={opts.imaging_processes}{why}"
