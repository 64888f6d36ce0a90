"""Image understanding, pure compute: CLIP embeddings of images and text (onnxruntime;
``model``, ``catalog``), zero-shot and model-free tags (``tags``), perceptual hashes
(``phash``). No I/O beyond loading a model directory; the handlers fetch bytes and write
rows. Import the modules themselves: this package imports nothing, so a process that needs
one part does not load the others (imagehash brings scipy)."""
