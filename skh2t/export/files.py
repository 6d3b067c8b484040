"""Write a compact Head2Toe module to a file: ONNX, TorchScript or a torch.export program."""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skh2t.export.build import compact_module
from skh2t.export.module import CompactHead2Toe
from skh2t.output_files import check_output_file, written_whole

#: File suffixes and the format each one writes.
FORMATS = {".onnx": "ONNX", ".pt": "TorchScript", ".pt2": "torch.export"}
#: The ONNX opset the files use by default: the one torch's ONNX exporter implements its
#: operators in. It writes a newer opset by converting the model up; an older one it can
#: only reach by a down-conversion that fails for these models (keeping opset 18).
ONNX_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "logits"
#: The metadata key (ONNX) or extra file name (TorchScript, torch.export) of
#: :func:`read_metadata`'s record.
METADATA_KEY = "skh2t.json"
_JIT_DEPRECATED = r".*torch\.jit.*deprecated"


def export_model(
    model: Any,
    path: str | os.PathLike,
    *,
    opset_version: int = ONNX_OPSET,
    check: bool = True,
) -> Path:
    """Write a fitted Head2Toe model (or its :class:`CompactHead2Toe`) to ``path``.

    The format follows the suffix: ``.onnx`` (ONNX, needs ``pip install
    "skh2t[export]"``), ``.pt`` (TorchScript, traced) or ``.pt2``
    (``torch.export``, for ``torch.export.load``). Every format has the
    interface of :class:`CompactHead2Toe`: input ``images``, a float32 batch
    ``(N, 3, H, W)`` of RGB values in ``[0, 1]`` at the model's image size, any
    ``N``; output ``logits`` ``(N, n_classes)`` in the order of ``classes_``.

    Parameters
    ----------
    model : Head2ToeClassifier, Pipeline or CompactHead2Toe
        A fitted model as :func:`compact_module` takes, or its module.
    path : str or os.PathLike
        The file to write (replaced if it exists, once written and checked:
        a failure leaves no file and an old one as it was); its folder must
        exist.
    opset_version : int, default=18
        The ONNX opset (``.onnx`` only), one of :func:`onnx_opsets`; the file
        is checked to be of that opset.
    check : bool, default=True
        Load the written file with its runtime (onnxruntime for ONNX) and
        check that it gives the module's logits (relative error at most 1e-4)
        on a batch of random images; raise ``RuntimeError`` if not.

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from skh2t import GroupLassoClassifier
    >>> from skh2t.features import IntermediateFeatureTransformer
    >>> images = np.random.default_rng(0).integers(0, 256, (20, 32, 32), dtype=np.uint8)
    >>> model = make_pipeline(
    ...     IntermediateFeatureTransformer(
    ...         backbone="test_resnet", weights=None, image_size=32, target_size=256),
    ...     GroupLassoClassifier(alpha_fraction=0.1, keep_fraction=0.05),
    ... ).fit(images, np.arange(20) % 2)
    >>> path = export_model(model, tempfile.mkdtemp() + "/model.pt2")
    >>> loaded = torch.export.load(path).module()
    >>> tuple(loaded(torch.rand(3, 3, 32, 32)).shape)
    (3, 2)
    """
    path = Path(path)
    check_export_path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        check_opset(opset_version)
    module = model if isinstance(model, CompactHead2Toe) else compact_module(model)
    module = module.cpu().eval()
    example = torch.rand((2, 3, *module.image_size), generator=torch.Generator().manual_seed(0))
    writer = {".onnx": _write_onnx, ".pt": _write_torchscript, ".pt2": _write_exported}
    with written_whole(path) as part:  # a failed write or check leaves no file
        writer[suffix](module, example, part, opset_version=opset_version)
        if check:
            _check_file(module, part, suffix, shown=path)
    return path


def load_exported(path: str | os.PathLike, *, n_threads: int | None = None):
    """A callable ``float32 batch -> numpy logits`` running an exported file.

    ``.onnx`` runs in onnxruntime on the CPU (with ``enable_mem_pattern`` off:
    in ``benchmarks/bench_export.py`` that halved the peak memory and was
    faster), ``.pt`` through ``torch.jit.load`` and ``.pt2`` through
    ``torch.export.load``.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`export_model`.
    n_threads : int, default=None
        onnxruntime's intra-op threads (``None``: its default); PyTorch files
        use PyTorch's threads.

    Returns
    -------
    callable
        ``run(images) -> logits``: ``images`` a float32 batch ``(N, 3, H, W)``
        at the file's image size, as a NumPy array or a torch tensor (moved to
        the CPU; what :func:`~skh2t.export.prepare_images` returns), ``N`` at
        least 1; ``logits`` a NumPy array ``(N, n_classes)``. Anything else
        raises ``TypeError`` or ``ValueError`` naming the problem, before the
        file's runtime sees it.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from skh2t import GroupLassoClassifier
    >>> from skh2t.export import prepare_images
    >>> from skh2t.features import IntermediateFeatureTransformer
    >>> images = np.random.default_rng(0).integers(0, 256, (20, 32, 32), dtype=np.uint8)
    >>> model = make_pipeline(
    ...     IntermediateFeatureTransformer(
    ...         backbone="test_resnet", weights=None, image_size=32, target_size=256),
    ...     GroupLassoClassifier(alpha_fraction=0.1, keep_fraction=0.05),
    ... ).fit(images, np.arange(20) % 2)
    >>> path = export_model(model, tempfile.mkdtemp() + "/model.pt2")
    >>> run = load_exported(path)
    >>> run(prepare_images(images[:3], path)).shape
    (3, 2)
    >>> run(images[:3])
    Traceback (most recent call last):
    ...
    ValueError: images has dtype uint8; the exported model takes float32 values in [0, 1]...
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.enable_mem_pattern = False
        if n_threads is not None:
            options.intra_op_num_threads = n_threads
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        size = _recorded_image_size(session.get_modelmeta().custom_metadata_map)

        def run_onnx(images):
            batch = _input_batch(images, size).numpy()
            return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

        return run_onnx
    extra = {METADATA_KEY: ""}
    if suffix == ".pt":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    else:
        module = torch.export.load(str(path), extra_files=extra).module()
    size = _recorded_image_size(extra)

    def run(images):
        batch = _input_batch(images, size)
        with torch.inference_mode():
            return module(batch).numpy()

    return run


def _recorded_image_size(record: dict[str, str]) -> tuple[int, int] | None:
    """The ``(H, W)`` an exported file's metadata records (None: no metadata)."""
    text = record.get(METADATA_KEY, "")
    return tuple(json.loads(text)["image_size"]) if text else None


def _input_batch(images: Any, image_size: tuple[int, int] | None) -> torch.Tensor:
    """``images`` as the exported files take them: a contiguous float32 CPU tensor, checked."""
    expected = f"(N, 3, {', '.join(map(str, image_size))})" if image_size else "(N, 3, H, W)"
    if isinstance(images, np.ndarray):
        dtype, float32 = images.dtype, images.dtype == np.float32
    elif isinstance(images, torch.Tensor):
        dtype, float32 = str(images.dtype).removeprefix("torch."), images.dtype == torch.float32
    else:
        raise TypeError(
            f"images must be a float32 batch {expected} as a NumPy array or a torch tensor; "
            f"got {type(images).__name__}. skh2t.export.prepare_images(images, path) makes one "
            "from arrays, file paths or PIL images."
        )
    if not float32:
        raise ValueError(
            f"images has dtype {dtype}; the exported model takes float32 values in [0, 1]: use "
            "skh2t.export.prepare_images(images, path), or convert a batch already scaled to "
            "[0, 1]."
        )
    if isinstance(images, np.ndarray):
        batch = torch.from_numpy(images if images.flags.writeable else images.copy())
    else:
        batch = images.detach().cpu()
    wrong_size = image_size is not None and tuple(batch.shape[2:]) != tuple(image_size)
    if batch.dim() != 4 or batch.shape[1] != 3 or wrong_size or batch.shape[0] == 0:
        raise ValueError(
            f"images has shape {tuple(batch.shape)}; the exported model takes {expected} with "
            "N >= 1: skh2t.export.prepare_images(images, path) resizes images to it."
        )
    return batch.contiguous()


def _check_file(module: CompactHead2Toe, path: Path, suffix: str, *, shown: Path) -> None:
    images = torch.rand((3, 3, *module.image_size), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = module(images).numpy()
    got = load_exported(path)(images.numpy())
    error = float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12))
    if got.shape != expected.shape or not error <= 1e-4:
        raise RuntimeError(
            f"The {FORMATS[suffix]} file {str(shown)!r} does not reproduce the model "
            f"(relative error {error:.2g}); please report this."
        )


def check_export_path(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` unless ``path`` has a known suffix and can be written.

    Writability is :func:`skh2t.output_files.check_output_file`'s check (a file
    is created next to ``path`` and removed); an ``.onnx`` path also needs the
    export extra (``ImportError`` if it is missing).

    Examples
    --------
    >>> check_export_path("model.joblib")
    Traceback (most recent call last):
    ...
    ValueError: Cannot tell the export format from 'model.joblib': use a name ending in ...
    """
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        known = ", ".join(f"{s} ({f})" for s, f in FORMATS.items())
        known = " or ".join(known.rsplit(", ", 1))
        raise ValueError(
            f"Cannot tell the export format from {str(path)!r}: use a name ending in {known}."
        )
    check_output_file(path)
    if path.suffix.lower() == ".onnx":
        _require_onnx()


def onnx_opsets() -> range:
    """The ONNX opsets :func:`export_model` writes with the installed exporter.

    From :data:`ONNX_OPSET` (18) to the newest opset the installed ``onnxscript``
    converts a model to (its version converter's ``SUPPORTED_MAX_ONNX_OPSET``);
    beyond it torch's exporter fails or silently keeps opset 18. Needs the
    ``skh2t[export]`` extra.

    Examples
    --------
    >>> onnx_opsets()[0]
    18
    """
    _require_onnx()
    from onnxscript.version_converter import _version_converter

    newest = getattr(_version_converter, "SUPPORTED_MAX_ONNX_OPSET", ONNX_OPSET)
    return range(ONNX_OPSET, max(int(newest), ONNX_OPSET) + 1)


def check_opset(opset_version: Any) -> None:
    """Raise ``ValueError`` unless ``opset_version`` is an opset :func:`export_model` writes.

    Examples
    --------
    >>> check_opset(7)
    Traceback (most recent call last):
    ...
    ValueError: opset_version=7 is not an ONNX opset the exporter writes: use one from 18 to ...
    """
    supported = onnx_opsets()
    if isinstance(opset_version, bool) or not isinstance(opset_version, (int, np.integer)):
        valid = False
    else:
        valid = int(opset_version) in supported
    if not valid:
        raise ValueError(
            f"opset_version={opset_version!r} is not an ONNX opset the exporter writes: use "
            f"one from {supported[0]} to {supported[-1]} (default {ONNX_OPSET})."
        )


def _file_opset(path: Path) -> int | None:
    """The default-domain ONNX opset of the file at ``path``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs the export extra ({error.name} is missing): "
            'pip install "skh2t[export]".'
        ) from None


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """What an exported file says about itself: its classes, image size and interface.

    Every file written by :func:`export_model` carries this record (ONNX:
    metadata property ``"skh2t.json"``; TorchScript and ``torch.export``: an
    extra file of that name), so that a server needs nothing else. Of a
    ``.pt`` or ``.pt2`` archive only the record is read, not the program; an
    ``.onnx`` file is parsed whole (its weights are inside it), but no
    runtime session is made.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.onnx``, ``.pt`` or ``.pt2`` file written by :func:`export_model`.

    Returns
    -------
    dict
        ``classes`` (list, the logits' column order), ``image_size`` ``[H, W]``,
        ``interpolation``, ``input`` and ``output`` (names), ``n_features``,
        ``taps`` (the names of the taps read) and ``skh2t_version``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from skh2t import GroupLassoClassifier
    >>> from skh2t.features import IntermediateFeatureTransformer
    >>> images = np.random.default_rng(0).integers(0, 256, (20, 32, 32), dtype=np.uint8)
    >>> model = make_pipeline(
    ...     IntermediateFeatureTransformer(
    ...         backbone="test_resnet", weights=None, image_size=32, target_size=256),
    ...     GroupLassoClassifier(alpha_fraction=0.1, keep_fraction=0.05),
    ... ).fit(images, np.array(["cat", "dog"])[np.arange(20) % 2])
    >>> info = read_metadata(export_model(model, tempfile.mkdtemp() + "/model.pt"))
    >>> info["classes"], info["image_size"], info["input"], info["output"]
    (['cat', 'dog'], [32, 32], 'images', 'logits')
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        text = {p.key: p.value for p in model.metadata_props}.get(METADATA_KEY, "")
    else:
        text = _archive_extra_file(path, METADATA_KEY)
    if not text:
        raise ValueError(f"{str(path)!r} has no skh2t metadata: export_model did not write it.")
    return json.loads(text)


def _archive_extra_file(path: Path, name: str) -> str:
    """The extra file ``name`` of a TorchScript or torch.export archive, read without
    loading the program: both are zip files with the extra files in ``<root>/extra/``."""
    try:
        with zipfile.ZipFile(path) as archive:
            for entry in archive.namelist():
                if entry.split("/")[1:] == ["extra", name]:
                    return archive.read(entry).decode("utf-8")
    except zipfile.BadZipFile:
        raise ValueError(
            f"{str(path)!r} is not a {FORMATS[path.suffix.lower()]} file (not a zip archive)."
        ) from None
    return ""


def metadata(module: CompactHead2Toe) -> dict[str, Any]:
    """The record :func:`export_model` writes into a file of ``module`` (JSON-able).

    Parameters
    ----------
    module : CompactHead2Toe
        An exportable module.

    Returns
    -------
    dict
        What :func:`read_metadata` reads back from the file.
    """
    from skh2t import __version__

    return {
        "classes": [_json_value(c) for c in module.classes_],
        "image_size": list(module.image_size),
        "interpolation": module.interpolation,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "n_features": module.n_features,
        "taps": [readout.name for readout in module.readouts],
        "skh2t_version": __version__,
    }


def _json_value(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def _write_onnx(module: CompactHead2Toe, example: torch.Tensor, path: Path, **options) -> None:
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)  # from onnxscript's deps
        program = torch.onnx.export(
            module,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=options["opset_version"],
            dynamo=True,
            dynamic_shapes={INPUT_NAME: {0: batch}},
            verbose=False,
        )
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata(module))
    program.save(str(path), external_data=False)
    written = _file_opset(path)
    if written != options["opset_version"]:
        raise ValueError(
            f"The ONNX exporter wrote opset {written}, not opset_version="
            f"{options['opset_version']}; use one from {ONNX_OPSET} to {onnx_opsets()[-1]}."
        )


def _write_torchscript(module: CompactHead2Toe, example: torch.Tensor, path: Path, **_) -> None:
    with warnings.catch_warnings():
        # PyTorch deprecates TorchScript in favour of torch.export (the .pt2 format).
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=FutureWarning)
        traced = torch.jit.trace(module, example, check_inputs=[(example[:1],)])
        extra = {METADATA_KEY: json.dumps(metadata(module))}
        torch.jit.save(traced, str(path), _extra_files=extra)


def _write_exported(module: CompactHead2Toe, example: torch.Tensor, path: Path, **_) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes={INPUT_NAME: {0: batch}})
    torch.export.save(program, str(path), extra_files={METADATA_KEY: json.dumps(metadata(module))})
