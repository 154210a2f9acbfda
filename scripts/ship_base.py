"""Turn a finished base run into the files voxid ships: `base.pt` and `base.onnx`.

    python scripts/ship_base.py RUN --data STORE [--lda] [--min-input-seconds S]
                                [--out src/voxid/pretrained]

RUN is a finished run, or a model file that is already an encoder (the shipped `base.pt`),
to ship it again with another back-end: its LDA projection and cohort are kept unless
`--lda` fits them again, and its threshold is calibrated again.

The encoder alone ships: the head over the training speakers (and their names) is dropped,
since a base model knows nobody until speakers are enrolled. Its weights are rounded to
float16 once, so the `.pt` file is half the size, and the ONNX file is exported from those
same rounded weights: both give the same embeddings and the same model fingerprint. The
verification threshold is calibrated (FAR 1 %) on the store's `heldout` split, speakers the
model never trained on, and stored in both files. `--min-input-seconds` sets how short
speech is embedded (`voxid.inference.chunks.ChunkPolicy`) before the LDA and the threshold
are fitted, so both are fitted on inputs embedded as the recogniser will embed them.
Called by `make base-model`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def description(store: Path) -> str:
    """models.json's line for the base model, with the store's count of warps (the natural
    voice and each `<speaker>@<warp>` suffix)."""
    from voxid.data.store import StoreInfo

    warps = 1 + len({s.split("@", 1)[1] for s in StoreInfo.open(store).speakers if "@" in s})
    return (
        f"ECAPA-TDNN (256 channels, 192-d) trained on 532 CC BY / CC0 voices x {warps} warps, "
        "distilled from Resemblyzer; zero-shot enrolment and verification"
    )


def encoder_only(run: Path, staging: Path, min_input_seconds: float | None = None) -> Path:
    """`run`'s best weights without the head, rounded to float16, as a voxid model file;
    with `min_input_seconds`, short speech is embedded at that length (the card's
    `audio_config.chunk.min_input_seconds`)."""
    import dataclasses

    from voxid.checkpoint import PREFIX, load_checkpoint, make_card
    from voxid.models import build_model

    card, model = load_checkpoint(run)
    bare = build_model(model.name, 0, model.feature_config, **model.hparams)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    missing = bare.load_state_dict(state, strict=False)
    if missing.unexpected_keys or [k for k in missing.missing_keys if not k.startswith("head.")]:
        raise SystemExit(f"ship_base: the encoder does not fit ({missing})")
    audio = card.to_dict()["audio_config"]
    if min_input_seconds is not None:
        audio["chunk"] = {**(audio.get("chunk") or {}), "min_input_seconds": min_input_seconds}
    desc = make_card(
        bare,
        [],
        data_fingerprint=card.data_fingerprint,
        audio_config=audio,
        train_speakers=[],
    )
    trained = card.train_speakers or card.labels
    base = card.base or {  # an encoder shipped before keeps its training record
        "trained_speakers": len(trained), "source_run": run.name, "init": card.init,
    }  # fmt: skip
    # An encoder shipped before keeps its projection's record with its weights.
    scoring = dataclasses.replace(desc.scoring, projection=card.scoring.projection)
    desc = dataclasses.replace(desc, base=base, scoring=scoring)
    out = staging / "base.pt"
    weights = {PREFIX + k: v for k, v in bare.state_dict().items()}  # head: 0 classes
    torch.save({"voxid": desc.to_dict(), "state_dict": weights}, out)
    return to_half(out)


def to_half(path: Path) -> Path:
    """Round a model file's float weights to float16, in place; its fingerprint follows.

    Loaded, the model computes in float32 from those values (the shipped function), so the
    fingerprint is that of the float32 copies, as `load_checkpoint` will rebuild them."""
    from voxid.checkpoint import PREFIX, model_fingerprint, read_checkpoint

    ckpt = read_checkpoint(path)
    if not all(k.startswith(PREFIX) for k in ckpt["state_dict"]):
        raise SystemExit(f"ship_base: {path} holds more than model weights")
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    loaded = {k: (v.float() if v.is_floating_point() else v) for k, v in half.items()}
    ckpt["state_dict"] = half
    ckpt["voxid"]["model_fingerprint"] = model_fingerprint(loaded)
    torch.save(ckpt, path)
    return path


def main() -> int:
    """Build, calibrate, export and copy the base model files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="the base store (heldout split)")
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "voxid" / "pretrained")
    parser.add_argument("--far", type=float, default=0.01)
    parser.add_argument(
        "--min-input-seconds", type=float, default=None,
        help="repeat speech shorter than this to this length, one pass (default: one chunk)",
    )  # fmt: skip
    parser.add_argument(
        "--lda", action="store_true",
        help="fit an LDA projection with an AS-norm cohort on the training speakers",
    )  # fmt: skip
    args = parser.parse_args()

    from voxid.calibration import calibrate
    from voxid.inference.export import export_onnx
    from voxid.lda import fit_run_lda

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ship-", dir=args.out) as tmp:
        staging = Path(tmp)
        pt = encoder_only(args.run, staging, args.min_input_seconds)
        if args.lda:
            fit_run_lda(pt, args.data, split="train", cohort=True)
            to_half(pt)
        rep = calibrate(pt, args.data, split="heldout", far=args.far)
        onnx = staging / "base.onnx"
        exported = export_onnx(pt, onnx)
        if exported.min_cosine < 0.9999:
            raise SystemExit(f"ship_base: ONNX differs from torch (cosine {exported.min_cosine})")
        index = {"base": {"description": description(args.data), "card": "MODEL_CARD.md"}}
        (staging / "models.json").write_text(json.dumps(index, indent=2) + "\n")
        for name in ("base.pt", "base.onnx", "models.json"):
            shutil.move(str(staging / name), args.out / name)
    summary = {
        "threshold": rep.threshold,
        "threshold_kind": rep.kind,
        "calibration": rep.to_dict(),
        "onnx_mb": exported.size_mb,
        "pt_mb": round((args.out / "base.pt").stat().st_size / 2**20, 2),
        "lda": bool(args.lda),
        "min_input_seconds": args.min_input_seconds,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
