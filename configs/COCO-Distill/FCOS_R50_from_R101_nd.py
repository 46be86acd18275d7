# ReviewKD++ for FCOS, a LazyConfig as detectron2's FCOS: an FCOS R50-FPN student on detectron2's
# own recipe (COCO-Detection/fcos_R_50_FPN_1x.py: 16 images per step, LR 0.01, 90k steps, GroupNorm
# head) from a frozen FCOS R101-FPN teacher, ReviewKD 1.0 on the head's levels p3..p7 + ND 1.0 on
# the classification tower at the positive locations (docs/one_stage.md).  detectron2's model zoo
# has no FCOS weights: train the teacher first (detectron2's tools/lazyconfig_train_net.py on
# fcos_R_50_FPN_1x.py with model.backbone.bottom_up.stages.depth=101 and the R-101 ImageNet file)
# and give its checkpoint as model.teacher.weights.  Nothing was trained with this file here.
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from nd_det.modeling import DistillFCOS, FrozenTeacher
from nd_det.modeling.lazy import distill_terms

_recipe = get_config("COCO-Detection/fcos_R_50_FPN_1x.py")
dataloader, optimizer, train, lr_multiplier = (
    _recipe.dataloader,
    _recipe.optimizer,
    _recipe.train,
    _recipe.lr_multiplier,
)
model = _recipe.model
model._target_ = DistillFCOS
model.mechanism_period = 20  # ND's norm ratio and cosine into metrics.json every 20 steps
model.teacher = L(FrozenTeacher.from_values)(
    config="COCO-Detection/fcos_R_50_FPN_1x.py",
    weights="",  # your FCOS R101-FPN checkpoint (see above)
    opts=["model.backbone.bottom_up.stages.depth=101"],
    autocast="",
    student_format="BGR",  # detectron2's FCOS model keeps no input_format: its default, BGR
    num_classes="${..num_classes}",
    max_input_size=1333,
    one_stage="FCOS",  # the student's kind: the teacher must be an FCOS too
)
model.distill_terms = distill_terms(
    losses=["reviewkd", "nd"],
    class_means="class_means/coco_fcos_R_101_FPN_1x.pth",
    reviewkd=dict(weight=1.0, in_features=["p3", "p4", "p5", "p6", "p7"]),
    nd=dict(weight=1.0),
)
train.output_dir = "output/FCOS_R50_from_R101_nd"
