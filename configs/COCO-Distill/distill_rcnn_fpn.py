# Base of the LazyConfig distillation configs: what Base-Distill-RCNN-FPN.yaml and
# Base-R50-Student.yaml hold, in detectron2's LazyConfig form (its configs/common/ files).  A
# Faster R-CNN R50-FPN student (DistillRCNN) from detectron2's ImageNet MSRA weights, the
# model-zoo Faster R-CNN R101-FPN 3x teacher (box AP 42.0), the reference schedule (8 images per
# step, LR 0.01, 180k steps, LR x0.1 at 120k and 160k).  Variants set model.distill_terms.
# Train with tools/lazy_train_net.py (docs/lazyconfig.md); detectron2's dotted overrides apply.
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from nd_det.modeling import DistillRCNN, FrozenTeacher
from nd_det.modeling.lazy import distill_terms

model = get_config("common/models/mask_rcnn_fpn.py").model
model._target_ = DistillRCNN
for key in ("mask_in_features", "mask_pooler", "mask_head"):  # a Faster R-CNN student
    model.roi_heads.pop(key)
model.backbone.bottom_up.freeze_at = 2  # stem + res2, as MODEL.BACKBONE.FREEZE_AT 2
model.mechanism_period = 20  # ND's norm ratio and cosine into metrics.json every 20 steps
model.teacher = L(FrozenTeacher.from_values)(
    config="COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
    weights="detectron2://COCO-Detection/faster_rcnn_R_101_FPN_3x/137851257/model_final_f6e8b1.pkl",
    opts=[],  # the teacher config's overrides: KEY VALUE pairs (yacs) or key=value (LazyConfig)
    cascade_stage=-1,
    autocast="",
    student_format="${..input_format}",
    num_classes="${..roi_heads.num_classes}",
    max_input_size=1333,  # the student's largest image side (train and test)
)
# written by: python tools/extract_class_means.py --config-file R50_from_R101_nd.yaml (the same
# teacher: a table is tied to the teacher's config, weights and overrides, not to the file)
model.distill_terms = distill_terms(class_means="class_means/coco_faster_rcnn_R_101_FPN_3x.pth")

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.use_instance_mask = False
dataloader.train.total_batch_size = 8

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.01

train = get_config("common/train.py").train
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 180000
train.checkpointer.period = 10000
train.eval_period = 0  # evaluate at the end
train.seed = -1

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[120000, 160000], num_updates=180000
    ),
    warmup_length=1000 / 180000,
    warmup_method="linear",
    warmup_factor=0.001,
)
