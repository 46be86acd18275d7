"""Training configs of the classification package: fvcore's ``CfgNode``, as detectron2's are.

``get_cfg()`` gives every key's default; ``load_config(file, opts)`` merges a yaml file (with its
``_BASE_`` chain, paths relative to the file naming them) and then ``KEY VALUE`` overrides, as
``tools/train_cls.py --config-file FILE KEY VALUE ...`` does.  fvcore refuses an unknown key and
a value of another type than the default's, with a message naming the key.  The distillation
terms follow detection's ``MODEL.DISTILL``: ``distill.losses`` lists the terms, each has its own
node of parameters (``distill.kd.temperature``); the cross-entropy is the task's own loss.
"""

from collections.abc import Sequence

import yaml
from fvcore.common.config import CfgNode

from ..errors import ConfigError, input_stage
from ..utils.text import first_line

__all__ = ["get_cfg", "load_config"]

_C = CfgNode()
_C.model = CfgNode()
_C.model.name = ""  # a registered classifier (nd_det.classification.models)
# weights to start from (a model_final.pth of train_cls.py or a raw state dict); with
# --eval-only, the weights evaluated
_C.model.weights = ""
_C.model.drop_path_rate = 0.0  # stochastic depth of the transformer models (0: none)
_C.model.label_smoothing = 0.0  # of the cross-entropy with the labels (the task loss)
_C.data = CfgNode()
_C.data.name = ""  # cifar100 | image_folder | fashion_mnist | digits
_C.data.root = ""  # dataset folder ("": each dataset's default)
_C.data.train_subset = None  # use N training samples (a fixed random choice): quick runs
_C.data.test_subset = None  # use N test samples
_C.data.subset_seed = 0  # the random choice of those subsets
_C.data.image_size = 224  # image_folder: crop size
_C.data.train_dir = "train"  # image_folder: the training split under root
_C.data.test_dir = "val"  # image_folder: the evaluated split
_C.data.augment = "standard"  # image_folder training augmentation: standard | deit
_C.data.mixup_alpha = 0.0  # batch mixup, Beta(alpha, alpha) (0: off)
_C.data.cutmix_alpha = 0.0  # batch cutmix (0: off); with mixup, one of the two per batch
_C.data.download = False  # cifar100: fetch the archive with torchvision
_C.data.verify_checksums = True  # cifar100: require the official files' md5
_C.data.num_workers = 4  # data-loading processes per training process
_C.solver = CfgNode()
_C.solver.epochs = 240
_C.solver.batch_size = 128  # TOTAL over all processes (divided by the world size)
_C.solver.eval_batch_size = 256  # per process
_C.solver.optimizer = "sgd"  # sgd | adamw (no weight decay on biases and norm layers)
_C.solver.lr = 0.1
_C.solver.momentum = 0.9  # sgd
_C.solver.nesterov = True  # sgd
_C.solver.betas = [0.9, 0.999]  # adamw
_C.solver.weight_decay = 5e-4
# multistep, cosine (both set per epoch) or warmup_cosine (set every iteration)
_C.solver.lr_schedule = "multistep"
_C.solver.lr_milestones = [150, 180, 210]  # multistep
_C.solver.lr_gamma = 0.1  # multistep
_C.solver.warmup_epochs = 0  # warmup_cosine: linear warm-up from 0 over these epochs
_C.solver.min_lr = 0.0  # warmup_cosine: the LR the cosine ends at
_C.solver.clip_grad_norm = None  # clip the gradient's total norm to this (null: no clipping)

_C.distill = CfgNode()
_C.distill.teacher = CfgNode()
_C.distill.teacher.name = ""  # registered classifier of the teacher ("": no teacher)
_C.distill.teacher.weights = ""  # the trained teacher (train_cls.py output or raw state dict)
_C.distill.teacher.config = ""  # the teacher's training config (recorded for provenance)
# the teacher's class means, from tools/extract_class_means.py --task classification (ND)
_C.distill.class_means = ""
# Terms of nd_det.distill added to the cross-entropy, in order: kd, dkd, dist, reviewkd, nd.
# KD++ = [kd, nd]; DKD++ = [dkd, nd]; ReviewKD++ = [reviewkd, nd]; DIST++ = [dist, nd]
_C.distill.losses = []
# warmed-up terms are scaled by min(1, epoch / warm_up_epochs), epoch counted from 0
_C.distill.warm_up_epochs = 0
# each term's parameters (nd_det/distill/<name>.py); warm_up: whether the factor applies
_C.distill.nd = CfgNode({"weight": 1.0, "warm_up": False, "dropout": 0.5})
_C.distill.kd = CfgNode({"weight": 1.0, "warm_up": True, "temperature": 4.0, "hard": False})
_C.distill.dkd = CfgNode(
    {"weight": 1.0, "warm_up": True, "alpha": 1.0, "beta": 8.0, "temperature": 4.0}
)
_C.distill.dist = CfgNode(
    {"weight": 1.0, "warm_up": True, "beta": 1.0, "gamma": 1.0, "temperature": 4.0}
)
# ABF width, its norm (bn | gn | none), and which maps each side gives: those before the
# stages' last ReLU (preact) or after; the reference's CIFAR code fuses the student's outputs
# against the teacher's pre-activation maps
_C.distill.reviewkd = CfgNode(
    {
        "weight": 1.0,
        "warm_up": True,
        "mid_channels": 256,
        "norm": "bn",
        "student_preact": False,
        "teacher_preact": True,
    }
)

_C.train = CfgNode()
_C.train.output_dir = "output/classification"  # where the run writes
_C.train.seed = 0  # seeds weights, data order and augmentation
_C.train.device = "auto"  # auto | cpu | cuda
_C.train.amp = False  # autocast: float16 + GradScaler on CUDA, bfloat16 on CPU
_C.train.log_period = 50  # iterations between progress lines / JSON records
_C.train.eval_period = 1  # epochs between evaluations (the last epoch is always evaluated)
_C.train.tensorboard = True  # write TensorBoard events too
_C.freeze()


def get_cfg() -> CfgNode:
    """A copy of the defaults (unfrozen)."""
    cfg = _C.clone()
    cfg.defrost()
    return cfg


def load_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """The defaults, ``config_file`` merged in, then the ``KEY VALUE`` pairs of ``opts``."""
    cfg = get_cfg()
    with input_stage(f"--config-file {config_file}"):
        try:
            cfg.merge_from_file(config_file)
        except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as e:  # not a yaml mapping
            raise ConfigError(
                f"--config-file {config_file}: not a yaml config ({first_line(e)})"
            ) from None
    with input_stage("the KEY VALUE overrides"):
        cfg.merge_from_list(list(opts))
    return cfg
