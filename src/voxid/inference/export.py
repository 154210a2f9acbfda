"""ONNX export of a speaker model (waveform in, embedding out), its onnxruntime backend,
and `load_backend`, which picks that backend or the torch one for a model file.

The exported graph holds the feature front-end and the encoder, so it needs nothing but a
waveform `(batch, samples)` float32 at the model's sample rate; both axes are dynamic.
Outputs: `embedding` `(batch, D)` (L2-normalised for embedding models) and, for a pure
classifier (`seed_cnn`), `logits` `(batch, C)`.

The file describes itself in its `metadata_props`:
- `voxid`: the checkpoint's meta JSON (labels, feature and audio config, threshold,
  `model_fingerprint`, ...), plus `onnx_precision` ("fp32" or "int8") and
  `onnx_weights_sha256`: a sha256 over that fingerprint, the graph's weights (initializers
  and constants) and the two banks below. A loader recomputes it, so a fingerprint edited
  by hand, or other weights under the same metadata, are refused; a file without it (an
  older export) gets a fingerprint derived from its weights, `onnx-<hash>`, which no torch
  file shares (export it again to share a registry with the torch model).
- `voxid_class_weights`: the AAM-softmax class-weight bank of the training speakers, as
  base64 of a float32 `.npy` `(C, D)` (absent for classifiers), so training speakers can
  be verified without enrolment, as with the torch backend.

An int8 file (dynamic quantisation of MatMul/Gemm weights) gets the fingerprint
`<fp32 fingerprint>-int8`: its embeddings are close to, not equal to, the fp32 ones, so
a registry enrolled with one refuses the other.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxid.card import ModelCard, OnnxInfo
from voxid.errors import ModelError
from voxid.inference.backends import Backend, TorchBackend, usable_cores

if TYPE_CHECKING:
    import torch
from voxid.io import atomic_write

OPSET = 17
META_KEY = "voxid"
WEIGHTS_KEY = "voxid_class_weights"
#: The score-normalisation cohort (`voxid fit-lda`), base64 `.npy` like the class weights.
COHORT_KEY = "voxid_cohort"
#: The key in the `voxid` metadata of the hash that ties the fingerprint to the weights.
DIGEST_KEY = "onnx_weights_sha256"


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how closely the ONNX model matches torch."""

    path: str
    precision: str
    opset: int
    exporter: str
    size_mb: float
    max_abs_diff: float
    min_cosine: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def _encode_array(x: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _decode_array(text: str, source: str, what: str = "class-weight bank") -> np.ndarray:
    try:
        array: np.ndarray = np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)
        return array
    except (ValueError, OSError) as exc:
        raise ModelError(f"{source}: corrupt {what} in metadata ({exc})") from None


def _graph_tensors(graph: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every weight of a graph and its subgraphs: initializers and Constant nodes' values."""
    from onnx import AttributeProto

    for init in graph.initializer:
        yield prefix + init.name, init
    for i, node in enumerate(graph.node):
        where = f"{prefix}{node.name or node.op_type + str(i)}/"
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield f"{where}{attr.name}", attr.t
            elif attr.type == AttributeProto.GRAPH:
                yield from _graph_tensors(attr.g, f"{where}{attr.name}/")
            elif attr.type == AttributeProto.GRAPHS:
                for j, sub in enumerate(attr.graphs):
                    yield from _graph_tensors(sub, f"{where}{attr.name}{j}/")


def weights_digest(proto: Any, fingerprint: str, banks: tuple[str | None, ...] = ()) -> str:
    """sha256 over `fingerprint`, the graph's weights (sorted by name: name, type, shape,
    bytes) and the metadata banks (class weights, cohort) of an ONNX model proto."""
    from onnx import numpy_helper

    digest = hashlib.sha256(f"voxid-onnx-1|{fingerprint}|".encode())
    for name, tensor in sorted(_graph_tensors(proto.graph), key=lambda item: item[0]):
        array = numpy_helper.to_array(tensor)  # the same bytes whichever field holds them
        data = repr(array.tolist()) if array.dtype == object else array.tobytes()
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|{len(data)}|".encode())
        digest.update(data if isinstance(data, bytes) else data.encode())
    for bank in banks:
        digest.update(b"|bank|" + (b"-" if bank is None else bank.encode()))
    return digest.hexdigest()


def _set_metadata(proto: Any, props: dict[str, str], card: ModelCard) -> None:
    banks = (props.get(WEIGHTS_KEY), props.get(COHORT_KEY))
    digest = weights_digest(proto, card.fingerprint or "", banks)
    onnx = dataclasses.replace(card.onnx or OnnxInfo(), weights_sha256=digest)
    described = dataclasses.replace(card, onnx=onnx).to_dict()
    del proto.metadata_props[:]
    for key, value in {META_KEY: json.dumps(described), **props}.items():
        proto.metadata_props.add(key=key, value=value)


def _export_module(model: Any) -> torch.nn.Module:
    import torch

    class _Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            emb = self.model.encoder(self.model.frontend(wav))
            return emb, self.model.head(emb)

    return model.export_module() if model.is_embedding_model else _Classifier()


@contextlib.contextmanager
def _real_valued_stft() -> Iterator[None]:
    """Make `torch.stft` traceable by the TorchScript ONNX exporter, for this block only.

    The front-ends compute `view_as_real(stft(..., return_complex=True))`; that exporter maps
    only the real-valued form to ONNX's STFT op, and refuses complex tensors. Inside this
    block `stft` returns that real form (centre padding done explicitly, as the op has no
    `center`), and `view_as_real` passes it through: the same numbers, an exportable graph.
    """
    import torch
    import torch.nn.functional as F

    stft, view_as_real = torch.stft, torch.view_as_real

    def real_stft(
        x: torch.Tensor,
        n_fft: int,
        hop_length: int | None = None,
        win_length: int | None = None,
        window: torch.Tensor | None = None,
        center: bool = True,
        pad_mode: str = "reflect",
        normalized: bool = False,
        onesided: bool | None = None,
        return_complex: bool | None = None,
        **_: Any,
    ) -> torch.Tensor:
        if center:
            x = F.pad(x.unsqueeze(1), (n_fft // 2, n_fft // 2), mode=pad_mode).squeeze(1)
        return stft(
            x,
            n_fft,
            hop_length,
            win_length,
            window,
            center=False,
            normalized=normalized,
            onesided=onesided,
            return_complex=False,
        )

    # A patch of torch's module for the exporter's trace: its signatures are not ours.
    torch.stft, torch.view_as_real = real_stft, lambda x: x  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.stft, torch.view_as_real = stft, view_as_real


def _torch_export(module: Any, example: Any, path: Path, outputs: list[str]) -> str:
    import torch

    axes = {"waveform": {0: "batch", 1: "samples"}, **{o: {0: "batch"} for o in outputs}}
    # The TorchScript-based exporter handles GRUs and dynamic time axes reliably (torch
    # 2.13's dynamo exporter fails to decompose a bidirectional multi-layer GRU); dynamo is
    # the fallback for modules TorchScript cannot trace.
    errors = []
    try:
        with _real_valued_stft():
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=["waveform"],
                output_names=outputs,
                opset_version=OPSET,
                dynamo=False,
                dynamic_axes=axes,
            )
        return "torchscript"
    except Exception as exc:  # the exporters raise a zoo of types
        errors.append(f"torchscript: {str(exc).splitlines()[0][:200]}")
    finally:
        module.eval()  # the exporter restores the wrapper's train flag onto the children
    try:
        dim = torch.export.Dim
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["waveform"],
            output_names=outputs,
            opset_version=18,
            dynamo=True,
            dynamic_shapes=({0: dim("batch"), 1: dim("samples")},),
        )
        return "dynamo"
    except Exception as exc:
        errors.append(f"dynamo: {str(exc).splitlines()[0][:200]}")
    finally:
        module.eval()
    raise ModelError(f"ONNX export failed ({'; '.join(errors)})")


def export_onnx(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    int8: bool = False,
    check_seconds: float = 3.0,
) -> ExportReport:
    """Export a run (folder, `.ckpt` or `model.pt`) to a self-describing ONNX file.

    Arguments:
        run: the checkpoint to export.
        out: the `.onnx` file to write (atomically).
        int8: apply onnxruntime dynamic int8 quantisation to the weights.
        check_seconds: length of the random waveforms torch and ONNX are compared on.
    """
    import onnx
    import torch

    from voxid.checkpoint import load_checkpoint, model_fingerprint
    from voxid.models.base import SpeakerModel

    card, model = load_checkpoint(run)
    if not isinstance(model, SpeakerModel):
        raise ModelError(f"{run}: only neural models can be exported to ONNX")
    model.eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sr = card.sample_rate
    outputs = ["embedding"] if model.is_embedding_model else ["embedding", "logits"]
    module = _export_module(model).eval()
    example = torch.randn(2, int(sr * check_seconds)) * 0.1
    fingerprint = model_fingerprint(model.state_dict())
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        fp32 = Path(tmp) / "model.onnx"
        exporter = _torch_export(module, example, fp32, outputs)
        proto = onnx.load(str(fp32))
        description = dataclasses.replace(
            card,
            fingerprint=fingerprint + ("-int8" if int8 else ""),
            onnx=OnnxInfo("int8" if int8 else "fp32", tuple(outputs)),
        )
        props = {}
        bank, cohort = model.class_bank(), model.score_cohort()
        if bank is not None:
            props[WEIGHTS_KEY] = _encode_array(bank)
        if cohort is not None:
            props[COHORT_KEY] = _encode_array(cohort)
        _set_metadata(proto, props, description)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            final = Path(tmp) / "final.onnx"
            onnx.save(proto, str(final))
            # The front-end's mel matrix stays fp32: quantising it would perturb every
            # feature, while the encoder's weights tolerate int8 well.
            frontend = [n.name for n in proto.graph.node if n.name.startswith("/frontend")]
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # quantize_dynamic warns on every untyped tensor
            try:
                quantize_dynamic(
                    str(final),
                    str(Path(tmp) / "int8.onnx"),
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=frontend,
                )
            finally:
                root.setLevel(level)
            proto = onnx.load(str(Path(tmp) / "int8.onnx"))
            _set_metadata(proto, props, description)  # over the int8 weights
        atomic_write(out, lambda staged: onnx.save(proto, str(staged), format="protobuf"))
    with torch.inference_mode():
        want = module(
            torch.randn(3, int(sr * check_seconds), generator=torch.Generator().manual_seed(0))
            * 0.1
        )
    want = (want[0] if isinstance(want, tuple) else want).numpy()
    probe = torch.randn(3, int(sr * check_seconds), generator=torch.Generator().manual_seed(0))
    got = OnnxBackend(out)._embed((probe * 0.1).numpy())
    cos = np.sum(want * got, 1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1))
    return ExportReport(
        str(out),
        "int8" if int8 else "fp32",
        OPSET,
        exporter,
        round(out.stat().st_size / 2**20, 2),
        float(np.abs(want - got).max()),
        float(cos.min()),
    )


def session_options(threads: int | None = None) -> Any:
    """onnxruntime options for low-latency CPU inference: full graph optimisation, and
    intra-op threads = physical cores (oversubscribing them costs more than it gains)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or usable_cores()
    opts.inter_op_num_threads = 1
    return opts


class OnnxBackend(Backend):
    """A self-describing voxid ONNX file run with onnxruntime (no torch at inference)."""

    kind = "onnx"

    def __init__(
        self, path: str | os.PathLike[str], device: str = "cpu", threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such ONNX file")
        providers = ["CPUExecutionProvider"]
        if (
            str(device).startswith("cuda")
            and "CUDAExecutionProvider" in ort.get_available_providers()
        ):
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(
                str(path), session_options(threads), providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own unexported error types
            reason = (
                str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            )
            raise ModelError(f"{path}: not a readable ONNX model ({reason})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in props:
            raise ModelError(f"{path}: not a voxid ONNX export (no '{META_KEY}' metadata)")
        try:
            meta = json.loads(props[META_KEY])
        except ValueError as exc:
            raise ModelError(f"{path}: corrupt voxid metadata ({exc})") from None
        card = ModelCard.from_dict(meta, str(path))
        outputs = {o.name: o for o in self.session.get_outputs()}
        if "embedding" not in outputs:
            raise ModelError(f"{path}: ONNX model has no 'embedding' output")
        is_embedding = "logits" not in outputs
        bank = _decode_array(props[WEIGHTS_KEY], str(path)) if WEIGHTS_KEY in props else None
        cohort = (
            _decode_array(props[COHORT_KEY], str(path), "score cohort")
            if COHORT_KEY in props
            else None
        )
        width = outputs["embedding"].shape[-1]  # an int, or a name for a dynamic axis
        dim = card.model.embedding_dim or width
        if isinstance(width, int) and dim != width:
            raise ModelError(
                f"{path}: metadata embedding_dim is {dim}, but the graph's embeddings have {width}"
            )
        fingerprint = _verified_fingerprint(path, card, props)
        super().__init__(str(path), card, fingerprint, is_embedding, int(dim), bank, cohort)
        self._lda: tuple[np.ndarray, np.ndarray] | None = None
        self._lda_read = False

    def _embed(self, chunks: np.ndarray) -> np.ndarray:
        embeddings: np.ndarray = self.session.run(["embedding"], {"waveform": chunks})[0]
        return embeddings

    def _logits(self, chunks: np.ndarray) -> np.ndarray:
        logits: np.ndarray = self.session.run(["logits"], {"waveform": chunks})[0]
        return logits

    def _projection(self) -> tuple[np.ndarray, np.ndarray] | None:
        # The export keeps the projection's buffers as named fp32 initializers; an int8 file
        # quantises the weight away, and then there is none to invert. Read once.
        if not self._lda_read:
            self._lda, self._lda_read = self._read_projection(), True
        return self._lda

    def _read_projection(self) -> tuple[np.ndarray, np.ndarray] | None:
        import onnx
        from onnx import numpy_helper

        found = {
            i.name: numpy_helper.to_array(i)
            for i in onnx.load(self.source).graph.initializer
            if i.name in ("projection.mean", "projection.weight")
        }
        if len(found) < 2 or found["projection.weight"].dtype != np.float32:
            return None
        return found["projection.mean"], found["projection.weight"]


def _verified_fingerprint(path: Path, card: ModelCard, props: dict[str, str]) -> str:
    """The model fingerprint of an ONNX file, checked against (or derived from) its weights.

    The registry trusts this string to tell which model embedded its speakers, and any
    ONNX tool can edit metadata; an edit of the fingerprint, the weights or the banks that
    does not also recompute the hash is caught (a check of integrity, not a signature).
    """
    import onnx

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ValidationError...
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a readable ONNX model ({first})") from None
    claimed = card.fingerprint or ""
    banks = (props.get(WEIGHTS_KEY), props.get(COHORT_KEY))
    stored = None if card.onnx is None else card.onnx.weights_sha256
    if stored is None:  # exported before weights were hashed: trust only the weights
        return "onnx-" + weights_digest(proto, "", banks)[:16]
    if stored != weights_digest(proto, claimed, banks):
        raise ModelError(
            f"{path}: metadata does not match the weights (model_fingerprint {claimed!r}, "
            "the weights or the class bank were edited after export); export it again"
        )
    return claimed


def load_backend(
    path: str | os.PathLike[str] | None, device: str = "cpu", threads: int | None = None
) -> Backend:
    """The backend for a model path: `.onnx` -> onnxruntime, anything else -> torch; a
    shipped model's name (or None: the base model) -> its ONNX file.

    Here rather than in `backends`, beside `OnnxBackend`: this module builds on
    `backends.Backend`, so the factory that picks either backend lives above both.

    `threads`: onnxruntime's intra-op threads (default: the cores); torch uses its global
    setting (`torch.set_num_threads`), which the caller owns.
    """
    from voxid.pretrained import resolve

    path = resolve(path, "onnx")  # a shipped model's name: its ONNX file
    if Path(path).suffix.lower() == ".onnx":
        return OnnxBackend(path, device=device, threads=threads)
    return TorchBackend(path, device=device)
