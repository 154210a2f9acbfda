"""Inference: from audio to answers, without Lightning or the training code.

`recognizer` (enrol, verify, identify, diarize), `results` (the typed answers),
`backends` (the torch backend) and `export` (ONNX export, the ONNX Runtime backend and
`load_backend`),
`registry` (the SQLite and PostgreSQL speaker registries), `index` (the
in-memory speaker index), `scoring` (cosine, AS-norm) and `bulk_enroll`.
"""
