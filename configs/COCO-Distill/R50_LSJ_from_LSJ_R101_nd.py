# ReviewKD++ (ReviewKD 1.4 + ND 1.0) on detectron2's LSJ recipe (new_baselines): a Mask R-CNN
# R50-FPN student trained as new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py (from scratch, SyncBN,
# 4conv1fc box head, large-scale jitter to 1024 px, 64 images per step, AMP, 100 epochs; published
# alone: box AP 42.9) from the LSJ Mask R-CNN R101-FPN 400-epoch teacher (box AP 48.9, mask AP
# 43.7).  Both 4conv1fc box heads give 1024-wide RoI embeddings; the teacher's mask head never
# runs, the student's trains from the ground truth.  Nothing was trained with it here.
# Class means: python tools/extract_class_means.py --config-file R50_from_LSJ_R101_nd.yaml (the
# same teacher).  For 200 or 400 epochs, start from that new_baselines file instead.
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from nd_det.modeling import DistillRCNN, FrozenTeacher
from nd_det.modeling.lazy import distill_terms

_recipe = get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
dataloader, optimizer, train, lr_multiplier = (
    _recipe.dataloader,
    _recipe.optimizer,
    _recipe.train,
    _recipe.lr_multiplier,
)
model = _recipe.model
model._target_ = DistillRCNN
model.mechanism_period = 20  # ND's norm ratio and cosine into metrics.json every 20 steps
# the recipe's `lambda c: NaiveSyncBatchNorm(c, stats_mode="N")` by its detectron2 name (the same
# layer; a name is written into config.yaml and the export, a lambda is not)
model.roi_heads.box_head.conv_norm = "naiveSyncBN_N"
model.roi_heads.mask_head.conv_norm = "naiveSyncBN_N"
model.teacher = L(FrozenTeacher.from_values)(
    config="new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py",
    weights="detectron2://new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ/42073830/model_final_f96b26.pkl",
    opts=[],
    cascade_stage=-1,
    autocast="",
    student_format="${..input_format}",
    num_classes="${..roi_heads.num_classes}",
    max_input_size=1333,  # test images: 800 px short side, 1333 long (training crops 1024)
)
model.distill_terms = distill_terms(
    losses=["reviewkd", "nd"],
    class_means="class_means/coco_mask_rcnn_R_101_FPN_400ep_LSJ.pth",
    reviewkd=dict(weight=1.4),
    nd=dict(weight=1.0),
)
train.output_dir = "output/R50_LSJ_from_LSJ_R101_nd"
