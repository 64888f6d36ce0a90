"""Imaging: a 12-megapixel photo (JPEG, and the same as HEIC) into the full variant set.

Ours is ``mediajobs.imaging.process_image`` (what a worker's imaging process runs); the peer
is libvips through pyvips, at the same sizes, WebP quality and effort, with metadata
stripped. Three libvips pipelines run, and each figure is compared with the best of them at
that figure:
- ``vips``: ``thumbnail_buffer`` per variant (shrink-on-load, how sharp and imgproxy work);
- ``vips_cascade``: one decode and a cascade of ``thumbnail_image`` calls;
- ``vips_system``: the cascade on the machine's libvips (Debian's ``libvips42``), whose
  libheif decodes HEVC where the ``pyvips-binary`` wheel's cannot.

Each system runs in fresh processes, so peak RSS is that process's own high-water mark:
- latency: one process, one image at a time (after a warm-up), median ms per image;
- throughput: one process per core, all at once, images per second overall while every
  process is busy (up to the moment the first one runs out of work).

    python bench/imaging.py [--runs 10] [--per-core 12] [--no-record]

Without ``libvips42`` installed (``apt-get install libvips42``) HEIC has no peer figure and
the script says so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import record

SIZES = {"thumb": 320, "card": 640, "preview": 1024, "detail": 1600, "detail_xl": 2560}
QUALITY, EFFORT = 80, 4
WIDTH, HEIGHT = 4032, 3024


def make_inputs(folder: Path) -> dict[str, Path]:
    import pillow_heif
    from PIL import Image
    from tests.support.images import photo

    pillow_heif.register_heif_opener()
    image = photo(WIDTH, HEIGHT)
    # Sensor-like grain: photos are not smooth, and noise is what makes encoders work.
    grain = Image.effect_noise((WIDTH, HEIGHT), 18).convert("RGB")
    image = Image.blend(image, grain, 0.12)
    paths = {"jpeg": folder / "photo.jpg", "heic": folder / "photo.heic"}
    image.save(paths["jpeg"], "JPEG", quality=90)
    image.save(paths["heic"], "HEIF", quality=90)
    return paths


# -- what each child runs -------------------------------------------------------------


def ours(threads: int | None = None) -> Any:
    from mediajobs.imaging import ImagePolicy, VariantSpec, process_image

    policy = ImagePolicy(
        variants=tuple(VariantSpec(n, s) for n, s in SIZES.items()), quality=QUALITY, method=EFFORT
    )

    def run(data: bytes) -> int:
        result = process_image(data, policy, threads=threads)
        return sum(v.size for v in result.variants)

    return run


def load_pyvips(system: bool) -> tuple[Any, dict[str, Any]]:
    """pyvips on the wheel's libvips, or (``system``) on the machine's libvips42, whose
    libheif decodes HEVC; and the save options that strip metadata on that version."""
    if system:
        sys.modules["_libvips"] = None  # type: ignore[assignment]  # forces ABI mode
    import pyvips

    if (pyvips.version(0), pyvips.version(1)) >= (8, 15):
        return pyvips, {"Q": QUALITY, "effort": EFFORT, "keep": "none"}
    return pyvips, {"Q": QUALITY, "effort": EFFORT, "strip": True}


def vips_per_variant(system: bool = False) -> Any:
    pyvips, save = load_pyvips(system)

    def run(data: bytes) -> int:
        total = 0
        for size in SIZES.values():
            image = pyvips.Image.thumbnail_buffer(data, size, height=size, size="down")
            total += len(image.webpsave_buffer(**save))
        return total

    return run


def vips_cascade(system: bool = False) -> Any:
    pyvips, save = load_pyvips(system)

    def run(data: bytes) -> int:
        largest = max(SIZES.values())
        current = pyvips.Image.thumbnail_buffer(data, largest, height=largest, size="down")
        current = current.copy_memory()
        total = 0
        for size in sorted(SIZES.values(), reverse=True):
            current = current.thumbnail_image(size, height=size, size="down").copy_memory()
            total += len(current.webpsave_buffer(**save))
        return total

    return run


def vips_system_cascade() -> Any:
    return vips_cascade(system=True)


SYSTEMS = {
    "mediajobs": ours,
    "vips": vips_per_variant,
    "vips_cascade": vips_cascade,
    "vips_system": vips_system_cascade,
}
PEERS = ("vips", "vips_cascade", "vips_system")


def ours_saturated() -> Any:
    """What each imaging process does when every process of the pool is busy: one thread
    per image (the pool hands out threads by free cores)."""
    return ours(threads=1)


VARIANTS_OF = {"mediajobs": ours_saturated}


def child(system: str, path: str, runs: int, start_at: float) -> None:
    factory = VARIANTS_OF.get(system, SYSTEMS[system]) if start_at else SYSTEMS[system]
    data = Path(path).read_bytes()
    try:
        run = factory()  # the machine's libvips may be missing (vips_system)
        run(data)  # warm-up: imports, codecs, caches
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300]}))
        return
    while start_at and time.time() < start_at:
        time.sleep(0.001)
    began = time.time()
    latencies, done_at = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(data)
        latencies.append((time.perf_counter() - t0) * 1000)
        done_at.append(time.time())
    ended = time.time()
    rss_mib = peak_rss_mib()
    print(
        json.dumps(
            {
                "latencies": latencies,
                "began": began,
                "ended": ended,
                "done_at": done_at,
                "rss": rss_mib,
            }
        )
    )


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over exec from
    the parent, which holds the generated test images."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spawn(system: str, path: Path, runs: int, start_at: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", system, str(path), str(runs), str(start_at)],
        stdout=subprocess.PIPE,
        text=True,
    )


def collect(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=1800)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def latency(system: str, path: Path, runs: int) -> dict[str, Any]:
    result = collect(spawn(system, path, runs))
    if "error" in result:
        return result
    return {"ms": statistics.median(result["latencies"]), "rss": result["rss"]}


def throughput(system: str, path: Path, per_process: int, processes: int) -> dict[str, Any]:
    start_at = time.time() + 4.0  # every process warmed up and waiting by then
    results = [
        collect(p) for p in [spawn(system, path, per_process, start_at) for _ in range(processes)]
    ]
    if any("error" in r for r in results):
        return {"error": results[0].get("error")}
    # Steady state: images finished while every process was still busy, i.e. up to the
    # moment the first process ran out of work (the ramp-down after it is left out, since
    # one process then has the machine to itself).
    start = min(r["began"] for r in results)
    window_end = min(r["ended"] for r in results)
    finished = sum(1 for r in results for t in r["done_at"] if t <= window_end)
    return {"ips": finished / (window_end - start), "rss": max(r["rss"] for r in results)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--per-core", type=int, default=12)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    figures: dict[str, Any] = {"cores": cores, "width": WIDTH, "height": HEIGHT}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        inputs = make_inputs(Path(folder))
        for fmt, path in inputs.items():
            for system in SYSTEMS:
                one = latency(system, path, args.runs)
                if "error" in one:
                    print(f"{system} {fmt}: cannot run ({one['error']})", file=sys.stderr)
                    figures[f"{system}_{fmt}_supported"] = False
                    continue
                many = throughput(system, path, args.per_core, cores)
                figures[f"{system}_{fmt}_ms"] = round(one["ms"], 1)
                figures[f"{system}_{fmt}_rss_mib"] = round(one["rss"], 1)
                figures[f"{system}_{fmt}_ips"] = round(many["ips"], 2)
                figures[f"{system}_{fmt}_rss_all_cores_mib"] = round(many["rss"], 1)
                rows.append(
                    f"| {system} | {fmt} | {one['ms']:.0f} | {many['ips']:.2f} | "
                    f"{one['rss']:.0f} | {many['rss']:.0f} |"
                )
                print(rows[-1], file=sys.stderr)
    # Per input and per figure, the peer is the best libvips pipeline at that figure (the
    # lowest latency, the highest throughput, the lowest RSS), so every ratio is against
    # libvips at its best.
    notes = []
    for fmt in inputs:
        ran = [p for p in PEERS if f"{p}_{fmt}_ms" in figures]
        if not ran:
            notes.append(f"{fmt.upper()}: no libvips here decodes it")
            continue
        suffix = "" if fmt == "jpeg" else f"_{fmt}"
        best = {
            "latency": min(ran, key=lambda p: figures[f"{p}_{fmt}_ms"]),
            "throughput": max(ran, key=lambda p: figures[f"{p}_{fmt}_ips"]),
            "rss": min(ran, key=lambda p: figures[f"{p}_{fmt}_rss_mib"]),
        }
        key = {"latency": "ms", "throughput": "ips", "rss": "rss_mib"}
        parts = []
        for name, peer in best.items():
            ours_value = figures[f"mediajobs_{fmt}_{key[name]}"]
            ratio = round(ours_value / figures[f"{peer}_{fmt}_{key[name]}"], 3)
            figures[f"ratio_vs_pyvips{suffix}_{name}"] = ratio
            figures[f"peer{suffix}_{name}"] = peer
            parts.append(f"{name} {ratio} (vs `{peer}`)")
        notes.append(f"{fmt.upper()}: " + ", ".join(parts))
    if not args.no_record:
        table = "\n".join(
            [
                "| system | input | ms per image | images/s (all cores) | peak RSS MiB (one) "
                "| peak RSS MiB per process (all cores) |",
                "|---|---|---|---|---|---|",
                *rows,
                "",
                "Ratios (ours / the best libvips pipeline at each figure, same input): "
                + "; ".join(notes)
                + ".",
            ]
        )
        record(
            f"Imaging: {WIDTH}x{HEIGHT} into {len(SIZES)} WebP variants",
            table,
            "python bench/imaging.py",
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit(main())
