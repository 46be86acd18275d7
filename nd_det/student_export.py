"""The student alone: a plain detectron2 config and a student-only checkpoint.

A DistillRCNN checkpoint holds the student (keys identical to a GeneralizedRCNN's) plus the
training-only modules of the distillation terms (``distill_losses.*``, e.g. ReviewKD's ABFs) and
the trainer's state (optimizer, scheduler, iteration); it never holds the teacher.  Deploying
needs only the student.  :func:`export_student` writes, into one folder::

    config.yaml       a plain detectron2 config: META_ARCHITECTURE GeneralizedRCNN, no
                      MODEL.DISTILL, MODEL.WEIGHTS "model_final.pth" (relative to the folder)
    model_final.pth   {"model": student state dict}, nothing else

The pair loads in stock detectron2 (``get_cfg().merge_from_file``, ``DefaultPredictor``,
``DefaultTrainer.test``) without importing nd_det, unless the student's backbone is one only
nd-det provides (MobileNetV2-FPN): then the config keeps ``MODEL.MOBILENETV2`` and the loading
process must ``import nd_det`` first.  nd-det's ResNet-18/34 builder makes exactly the modules of
detectron2's ``build_resnet_fpn_backbone``; the export checks that and writes the stock name.
"""
import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone, build_model
from detectron2.utils.file_io import PathManager

__all__ = [
    "DISTILL_STATE_PREFIX",
    "EXPORT_CONFIG_NAME",
    "EXPORT_WEIGHTS_NAME",
    "StudentExport",
    "StudentExportError",
    "deployable_student_cfg",
    "export_argument_parser",
    "export_student",
    "load_distill_cfg",
    "load_student_weights",
    "main",
    "plain_student_cfg",
    "student_state_dict",
    "uses_nd_det_backbone",
]

# state_dict prefix of the training-only distillation modules (see DistillRCNN.distill_losses)
DISTILL_STATE_PREFIX = "distill_losses."

# the two files of an export folder
EXPORT_CONFIG_NAME = "config.yaml"
EXPORT_WEIGHTS_NAME = "model_final.pth"

# config nodes (under MODEL) that nd-det adds; stock detectron2 rejects a yaml holding them
_ND_DET_MODEL_NODES = ("DISTILL", "MOBILENETV2")
_ND_DET_BACKBONE_NODES = ("MOBILENETV2",)

# nd-det backbone builders that build the same modules as a stock detectron2 builder
# (verified for each export by _backbone_difference before the stock name is written)
_STOCK_EQUIVALENT_BACKBONES = {"build_resnet_basic_fpn_backbone": "build_resnet_fpn_backbone"}

# checkpoint keys a student checkpoint may carry that the model does not (non-persistent buffers
# that old detectron2 versions saved); their values come from the config anyway
_IGNORED_UNEXPECTED_SUFFIXES = ("pixel_mean", "pixel_std")


class StudentExportError(ValueError):
    """The export cannot be made; the message names the bad file/key/folder and the fix."""


def uses_nd_det_backbone(cfg: CfgNode) -> bool:
    """True when MODEL.BACKBONE.NAME is registered by nd-det (stock detectron2 lacks it)."""
    name = cfg.MODEL.BACKBONE.NAME
    if name not in BACKBONE_REGISTRY:
        return False
    return BACKBONE_REGISTRY.get(name).__module__.split(".")[0] == "nd_det"


def plain_student_cfg(cfg: CfgNode) -> CfgNode:
    """``cfg`` as a plain detectron2 GeneralizedRCNN config: no ``MODEL.DISTILL`` keys, no
    ``SOLVER.AMP.PRECISION`` (nd-det's training-only key), and no nd-det backbone keys unless
    the student's backbone is one of nd-det's own."""
    plain = cfg.clone()
    plain.defrost()
    plain.SOLVER.AMP.pop("PRECISION", None)
    if plain.MODEL.META_ARCHITECTURE == "DistillRCNN":
        plain.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    keep = _ND_DET_BACKBONE_NODES if uses_nd_det_backbone(plain) else ()
    for node in _ND_DET_MODEL_NODES:
        if node not in keep:
            plain.MODEL.pop(node, None)
    plain.freeze()
    return plain


def student_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The student's entries of a DistillRCNN state dict (also accepts a DDP ``module.`` one)."""
    out = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if not key.startswith(DISTILL_STATE_PREFIX):
            out[key] = value
    return out


def load_checkpoint_model_state(path: str) -> Dict[str, torch.Tensor]:
    """The ``model`` entry of a detectron2 training checkpoint (.pth) at ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a detectron2 checkpoint (no 'model' state dict)")
    return state


# ------------------------------------------------------------------------------ config
def load_distill_cfg(config_file: str, opts: List[str]) -> CfgNode:
    """get_cfg + nd-det keys + ``config_file`` + KEY VALUE ``opts``, frozen; mistakes raise
    StudentExportError."""
    from .config import ConfigError, load_config  # late: keeps this module importable on its own

    if not config_file:
        raise StudentExportError("--config-file is required")
    try:
        return load_config(config_file, opts)
    except ConfigError as e:
        raise StudentExportError(str(e)) from None


def _on_cpu(cfg: CfgNode) -> CfgNode:
    """A clone of ``cfg`` that builds on the CPU (the export itself needs no GPU)."""
    cpu = cfg.clone()
    cpu.defrost()
    cpu.MODEL.DEVICE = "cpu"
    cpu.freeze()
    return cpu


def _backbone_difference(ours: CfgNode, stock: CfgNode) -> Optional[str]:
    """None when the backbones of the two configs are the same network (same modules, same
    state-dict keys and shapes, same outputs on one input given the same weights); otherwise a
    description of the first difference found."""
    input_shape = ShapeSpec(channels=len(ours.MODEL.PIXEL_MEAN))
    try:
        a = build_backbone(_on_cpu(ours), input_shape).eval()
    except (AssertionError, ValueError, KeyError) as e:
        raise StudentExportError(
            f"the student backbone {ours.MODEL.BACKBONE.NAME} of this config cannot be built: "
            f"{_first_line(e)}"
        ) from None
    try:
        b = build_backbone(_on_cpu(stock), input_shape).eval()
    except (AssertionError, ValueError, KeyError) as e:
        return f"it fails on this config: {_first_line(e)}"
    modules_a = {name: type(m).__name__ for name, m in a.named_modules()}
    modules_b = {name: type(m).__name__ for name, m in b.named_modules()}
    if modules_a != modules_b:
        names = sorted(set(modules_a.items()) ^ set(modules_b.items()))[:3]
        return f"different modules ({names})"
    shapes_a = {k: tuple(v.shape) for k, v in a.state_dict().items()}
    shapes_b = {k: tuple(v.shape) for k, v in b.state_dict().items()}
    if shapes_a != shapes_b:
        names = sorted(set(shapes_a.items()) ^ set(shapes_b.items()))[:3]
        return f"different state-dict keys or shapes ({names})"
    if a.output_shape() != b.output_shape():
        return f"different outputs ({a.output_shape()} vs {b.output_shape()})"
    b.load_state_dict(a.state_dict())
    side = 2 * max(32, a.size_divisibility)
    x = torch.randn(1, input_shape.channels, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
    for level in out_a:
        if not torch.equal(out_a[level].nan_to_num(), out_b[level].nan_to_num()):
            return f"different values at {level} for the same weights and input"
    return None


def deployable_student_cfg(cfg: CfgNode) -> Tuple[CfgNode, List[str]]:
    """The student of ``cfg`` as a plain detectron2 config, with nd-det backbone names replaced
    by stock ones where the networks are identical; and notes for the user."""
    student = plain_student_cfg(cfg)
    notes = []
    name = student.MODEL.BACKBONE.NAME
    stock_name = _STOCK_EQUIVALENT_BACKBONES.get(name)
    if stock_name is not None:
        candidate = student.clone()
        candidate.defrost()
        candidate.MODEL.BACKBONE.NAME = stock_name
        difference = _backbone_difference(student, candidate)
        if difference is None:
            student = plain_student_cfg(candidate)
            notes.append(
                f"MODEL.BACKBONE.NAME {name} -> {stock_name}: detectron2's own builder makes the "
                "same network (modules, state-dict keys and shapes, outputs checked), so stock "
                "detectron2 builds the exported student."
            )
        else:
            notes.append(f"kept MODEL.BACKBONE.NAME {name}: detectron2's {stock_name} builds "
                         f"another network here ({difference}).")
    if uses_nd_det_backbone(student):
        notes.append(
            f"the student's backbone {student.MODEL.BACKBONE.NAME} exists only in nd-det: "
            "config.yaml keeps nd-det's backbone keys (MODEL.MOBILENETV2), and the process that "
            "loads it must run "
            "`import nd_det` and `nd_det.modeling.backbone.add_backbone_config(cfg)` before "
            "cfg.merge_from_file (everything else is plain detectron2)."
        )
    return student, notes


# ------------------------------------------------------------------------------ weights
def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(error).__name__}: {line[:limit]}"


def _short(items, limit: int = 6) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _is_distill_module_key(key: str) -> bool:
    if key.startswith("module."):
        key = key[len("module."):]
    return key.startswith(DISTILL_STATE_PREFIX)


class _StudentCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer (paths, detectron2:// and https URLs, .pkl/.pth) that strips the
    distillation modules, records every mismatch instead of logging it, and turns unreadable
    files into StudentExportError."""

    def __init__(self, model, source: str):
        super().__init__(model)
        self.source = source
        self.incompatible = None
        self.training_only_keys: List[str] = []

    def _not_a_checkpoint(self, why: str) -> StudentExportError:
        return StudentExportError(
            f"--weights {self.source} is not a detectron2 checkpoint ({why}); give the .pth a "
            "detectron2 trainer wrote (e.g. <OUTPUT_DIR>/model_final.pth)"
        )

    def _load_file(self, filename):
        try:
            loaded = super()._load_file(filename)
        except Exception as e:  # noqa: BLE001 - unreadable files fail in many exception types
            raise self._not_a_checkpoint(_first_line(e)) from None
        if not isinstance(loaded, dict):
            raise self._not_a_checkpoint(f"it holds a {type(loaded).__name__}")
        return loaded

    def _load_model(self, checkpoint):
        state = checkpoint.get("model")
        if not isinstance(state, dict) or not state:
            raise self._not_a_checkpoint("no 'model' state dict")
        bad = [k for k, v in state.items() if not (torch.is_tensor(v) or hasattr(v, "shape"))]
        if bad:
            raise self._not_a_checkpoint(
                f"'model' entries that are not tensors: {_short(bad, 3)}")
        checkpoint["model"] = student_state_dict(state)
        self.training_only_keys = sorted(k for k in state if _is_distill_module_key(k))
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        """Mismatches become one StudentExportError in load_student_weights, not warnings."""


def _fetch(weights: str) -> None:
    """Fail early and clearly when ``weights`` is a missing file or an unreachable URL."""
    if "://" not in weights:
        if not os.path.isfile(weights):
            raise StudentExportError(
                f"--weights {weights}: file not found; give the training checkpoint "
                "(e.g. <OUTPUT_DIR>/model_final.pth) or a detectron2:// / https:// URL"
            )
        return
    url = urlparse(weights)._replace(query="").geturl()
    try:
        local = PathManager.get_local_path(url)
    except Exception as e:  # noqa: BLE001 - network and handler errors come in many types
        raise StudentExportError(f"--weights {weights}: could not download ({_first_line(e)})"
                                 ) from None
    if not os.path.isfile(local):
        raise StudentExportError(f"--weights {weights}: no handler can fetch this URL "
                                 "(use a local path, a detectron2:// or an https:// URL)")


def load_student_weights(model: torch.nn.Module, weights: str) -> Dict[str, List[str]]:
    """Load the student entries of the checkpoint ``weights`` (path or URL) into ``model`` and
    fail with StudentExportError unless every key matched in name and shape.

    Returns what the checkpoint held beyond the student: ``{"modules": [distill_losses.* keys],
    "entries": [top-level entries such as optimizer, scheduler, iteration]}``."""
    _fetch(weights)
    checkpointer = _StudentCheckpointer(model, weights)
    rest = checkpointer.load(weights)
    incompatible = checkpointer.incompatible
    problems = []
    wrong_shape = {k for k, _, _ in incompatible.incorrect_shapes}
    missing = [k for k in incompatible.missing_keys if k not in wrong_shape]
    if missing:
        problems.append(f"missing keys: {_short(missing)}")
    unexpected = [k for k in incompatible.unexpected_keys
                  if not k.endswith(_IGNORED_UNEXPECTED_SUFFIXES)]
    if unexpected:
        problems.append(f"unexpected keys: {_short(unexpected)}")
    if incompatible.incorrect_shapes:
        problems.append("shape mismatches: " + _short(
            [f"{k} {tuple(a)} in the checkpoint vs {tuple(b)} in the model"
             for k, a, b in incompatible.incorrect_shapes], 3))
    if problems:
        raise StudentExportError(
            f"--weights {weights} does not fit the student of the config ("
            + "; ".join(problems) + "); give the checkpoint trained with this config, or the "
            "config and KEY VALUE overrides it was trained with"
        )
    entries = sorted(k for k in rest if k not in ("model", "matching_heuristics", "__author__"))
    return {"modules": checkpointer.training_only_keys, "entries": entries}


# ------------------------------------------------------------------------------ writing
def _config_text(cfg: CfgNode, notes_for_yaml: List[str]) -> str:
    header = [
        "Student exported by nd-det (tools/export_student.py): a plain detectron2 config.",
        "MODEL.WEIGHTS is relative to this file's folder: before building, set it to",
        f"os.path.join(<this folder>, \"{EXPORT_WEIGHTS_NAME}\") (or pass MODEL.WEIGHTS",
        f"<this folder>/{EXPORT_WEIGHTS_NAME} on a detectron2 command line).",
    ] + notes_for_yaml
    return "".join(f"# {line}\n" for line in header) + cfg.dump()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_output_dir(output_dir: str, overwrite: bool) -> None:
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise StudentExportError(f"--output {output_dir} exists and is not a folder; "
                                 "give a new folder name")
    if not os.path.isdir(output_dir) or not os.listdir(output_dir):
        return
    if not overwrite:
        raise StudentExportError(
            f"--output {output_dir} is not empty; choose a new folder, or pass --overwrite to "
            "replace the export in it"
        )
    others = sorted(set(os.listdir(output_dir)) - {EXPORT_CONFIG_NAME, EXPORT_WEIGHTS_NAME})
    if others:
        raise StudentExportError(
            f"--output {output_dir} holds files that are not an export ({_short(others, 4)}); "
            "--overwrite replaces only a previous export folder: choose another folder"
        )


def _write_file(path: str, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _check_yaml_loads_in_stock_detectron2(path: str, needs_nd_det: bool) -> None:
    stock = get_cfg()
    if needs_nd_det:
        from .modeling.backbone import add_backbone_config

        add_backbone_config(stock)
    try:
        stock.merge_from_file(path)
    except (AssertionError, KeyError, ValueError, TypeError) as e:
        raise StudentExportError(
            f"the exported config would not load in detectron2 ({str(e).strip()}); it holds keys "
            "of another detectron2 extension: remove them from the config"
        ) from None


def _move_into_place(staging: str, output_dir: str) -> None:
    """Rename the finished ``staging`` folder to ``output_dir``; a previous export there is
    swapped out first and deleted only after the new one is in place."""
    if not os.path.isdir(output_dir) or not os.listdir(output_dir):
        os.replace(staging, output_dir)
        return
    parent, base = os.path.split(output_dir)
    old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
    os.replace(output_dir, old)
    try:
        os.replace(staging, output_dir)
    except BaseException:
        os.replace(old, output_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_export(output_dir: str, text: str, state: Dict[str, torch.Tensor],
                  needs_nd_det: bool) -> None:
    """Write both files into a hidden folder next to ``output_dir``, check the yaml, then
    rename: ``output_dir`` is never seen half-written."""
    parent, base = os.path.split(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{base}.partial-", dir=parent)
    try:
        os.chmod(staging, 0o777 & ~_current_umask())
        config_path = os.path.join(staging, EXPORT_CONFIG_NAME)
        _write_file(config_path, lambda f: f.write(text.encode("utf-8")))
        _check_yaml_loads_in_stock_detectron2(config_path, needs_nd_det)
        _write_file(os.path.join(staging, EXPORT_WEIGHTS_NAME),
                    lambda f: torch.save({"model": state}, f))
        _move_into_place(staging, output_dir)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)


@dataclass
class StudentExport:
    """What :func:`export_student` wrote."""

    output_dir: str
    config_file: str
    weights_file: str
    num_tensors: int
    needs_nd_det: bool
    dropped_modules: List[str] = field(default_factory=list)  # e.g. distill_losses.* keys
    dropped_entries: List[str] = field(default_factory=list)  # e.g. optimizer, iteration
    notes: List[str] = field(default_factory=list)


def export_student(cfg: CfgNode, weights: str, output_dir: str,
                   overwrite: bool = False) -> StudentExport:
    """Write ``config.yaml`` + ``model_final.pth`` of the student of the distillation config
    ``cfg``, with the weights of the training checkpoint ``weights`` (path or URL), into
    ``output_dir``.  Raises StudentExportError (nothing written) on any bad input."""
    output_dir = os.path.abspath(output_dir)
    _check_output_dir(output_dir, overwrite)
    _fetch(weights)  # a missing file or unreachable URL fails before any model is built
    student_cfg, notes = deployable_student_cfg(cfg)
    needs_nd_det = uses_nd_det_backbone(student_cfg)
    model = build_model(_on_cpu(student_cfg))
    dropped = load_student_weights(model, weights)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    export_cfg = student_cfg.clone()
    export_cfg.defrost()
    export_cfg.MODEL.WEIGHTS = EXPORT_WEIGHTS_NAME
    export_cfg.freeze()
    yaml_notes = [notes[-1]] if needs_nd_det else []
    try:
        _write_export(output_dir, _config_text(export_cfg, yaml_notes), state, needs_nd_det)
    except OSError as e:
        raise StudentExportError(
            f"--output {output_dir}: writing the export failed ({_first_line(e)}); the folder "
            "was left as it was: check its permissions and the free disk space"
        ) from e
    return StudentExport(
        output_dir=output_dir,
        config_file=os.path.join(output_dir, EXPORT_CONFIG_NAME),
        weights_file=os.path.join(output_dir, EXPORT_WEIGHTS_NAME),
        num_tensors=len(state),
        needs_nd_det=needs_nd_det,
        dropped_modules=dropped["modules"],
        dropped_entries=dropped["entries"],
        notes=notes,
    )


# ------------------------------------------------------------------------------ command line
_EPILOG = """
Example:
  tools/export_student.py --config-file configs/COCO-Distill/R50_from_R101_nd.yaml \\
      --weights output/R50_from_R101_nd/model_final.pth --output deploy/R50_nd

Then, in plain detectron2 (no nd_det import):
  cfg = get_cfg(); cfg.merge_from_file("deploy/R50_nd/config.yaml")
  cfg.MODEL.WEIGHTS = "deploy/R50_nd/model_final.pth"
  predictor = DefaultPredictor(cfg)
"""


def export_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export the student of a distillation run as a plain detectron2 config "
        "and a student-only checkpoint.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="the distillation config the student was trained with")
    parser.add_argument("--weights", required=True, metavar="CHECKPOINT",
                        help="training checkpoint (.pth written by the trainer), a path or a "
                        "detectron2:// / https:// URL")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help=f"folder to write {EXPORT_CONFIG_NAME} and {EXPORT_WEIGHTS_NAME} "
                        "into (must be new or empty)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous export in --output")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE config overrides, as given to training")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """tools/export_student.py: returns the exit status (2 for a user error, one line)."""
    args = export_argument_parser().parse_args(argv)
    try:
        cfg = load_distill_cfg(args.config_file, list(args.opts))
        result = export_student(cfg, args.weights, args.output, overwrite=args.overwrite)
    except StudentExportError as e:
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        return 2
    print(f"Exported the student to {result.output_dir}: {EXPORT_CONFIG_NAME}, "
          f"{EXPORT_WEIGHTS_NAME} ({result.num_tensors} tensors)")
    if result.dropped_modules or result.dropped_entries:
        print(f"Left out: {len(result.dropped_modules)} distillation-module tensors "
              f"({DISTILL_STATE_PREFIX}*), training state {result.dropped_entries}")
    for note in result.notes:
        print(f"NOTE: {note}")
    return 0
