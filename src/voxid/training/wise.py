"""What a fine-tuned run takes back from the model it started from (`wise`, `keep_lda`).

`wise: A` (below 1) makes the run's encoder the point a share A of the way from the
starting model's weights to the fine-tuned ones: a weight-space ensemble of the two
(Wortsman et al., 2022, "Robust fine-tuning of zero-shot models", WiSE-FT). Fine-tuning on
a few dozen voices teaches the encoder their recordings and forgets part of what hundreds
of voices taught it; runs from one pretrained model stay in one basin of the loss, so the
points between the two keep much of both. The new head is the fine-tuned run's: its class
directions were learnt for the fine-tuned encoder and stay near the interpolated one's.

`keep_lda: true` carries the starting model's LDA projection and AS-norm cohort into the
run (`voxid.models.projection`): fitted on hundreds of speakers, they suit an encoder that
moved only a little better than an LDA fitted on the run's few speakers could, and
`voxid fit-lda --adapt` can then bend them to the user's recordings.

Measured on P-C (BENCHMARKS.md, `bench/bench_finetune_pc.py`: the shipped base
imprinted-fine-tuned on asc30 00000001-20, 10 epochs, its LDA kept and then adapted): EER
on P-C's unseen voices 6.6 % at A = 1, 5.7 % at A = 0.5, 6.8 % for the base alone; by
hand, on another run, 7.1 % at A = 1, 6.0 % at 0.5 and 0.7, 6.4 % at 0.3.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from voxid.errors import ConfigError

__all__ = ["ENCODER_PREFIXES", "interpolate_state", "take_from_init"]

#: The checkpoint keys of the weights a fine-tuned run shares with its starting model.
ENCODER_PREFIXES = ("model.frontend.", "model.encoder.")


def interpolate_state(
    tuned: dict[str, torch.Tensor], start: dict[str, torch.Tensor], share: float
) -> dict[str, torch.Tensor]:
    """`tuned` with every front-end and encoder tensor moved back to `(1 - share) * start +
    share * tuned`; the rest (head, projection) and integer buffers are `tuned`'s.

    >>> out = interpolate_state({"model.encoder.w": torch.tensor([4.0]), "model.head.w":
    ...     torch.tensor([4.0])}, {"model.encoder.w": torch.tensor([0.0])}, 0.25)
    >>> out["model.encoder.w"].item(), out["model.head.w"].item()
    (1.0, 4.0)
    """
    out = dict(tuned)
    for key, value in tuned.items():
        if not key.startswith(ENCODER_PREFIXES) or not value.is_floating_point():
            continue
        if key not in start or start[key].shape != value.shape:
            raise ConfigError(f"wise: the starting model has no weights {key} of this shape")
        mixed = (1.0 - share) * start[key].double() + share * value.double()
        out[key] = mixed.to(value.dtype)
    return out


def take_from_init(best: Path, init: str, wise: float, keep_lda: bool) -> dict[str, Any] | None:
    """Rewrite the run's `best` checkpoint (atomically) with its encoder interpolated towards
    the `init` model's (`wise` below 1) and with `init`'s projection (`keep_lda`); what was
    done, as recorded in the checkpoint, or None when nothing is asked.

    Done once: a checkpoint that records the same step is not moved again, so a resumed
    run whose best epoch did not change is not moved twice; the projection is checked
    apart, so a run cut short between the two writes gets it on its resume.
    """
    from functools import partial

    from voxid.checkpoint import PREFIX, load_checkpoint, store_projection
    from voxid.io import atomic_write

    if wise >= 1.0 and not keep_lda:
        return None
    record = {"init": str(init), "wise": float(wise), "keep_lda": bool(keep_lda)}
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    moved = ckpt.get("from_init") == record
    has_lda = PREFIX + "projection.weight" in ckpt["state_dict"]
    if moved and (has_lda or not keep_lda):
        return record
    start_card, start = load_checkpoint(init)
    if keep_lda and getattr(start, "projection", None) is None:
        raise ConfigError(f"keep_lda: {init} has no LDA projection to keep")
    if not moved:
        if wise < 1.0:
            start_state = {PREFIX + k: v for k, v in start.state_dict().items()}
            ckpt["state_dict"] = interpolate_state(ckpt["state_dict"], start_state, wise)
        ckpt["from_init"] = record
        atomic_write(best, partial(torch.save, ckpt))
    if keep_lda:
        _, model = load_checkpoint(best)
        model.set_projection(copy.deepcopy(start.projection))
        kept = dict(start_card.scoring.projection or {"kind": "lda"})
        store_projection([best], model, {**kept, "from": str(init)})
    return record
