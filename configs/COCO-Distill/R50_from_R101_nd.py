# ReviewKD++ (ReviewKD 1.4 + ND 1.0): R50-FPN student, R101-FPN 3x teacher, the paper's schedule.
# The LazyConfig form of R50_from_R101_nd.yaml: the same model, terms and schedule
# (tests/test_lazy_configs.py builds both and compares them).  Paper: 41.03 AP.
from .distill_rcnn_fpn import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.distill_terms.losses = ["reviewkd", "nd"]
model.distill_terms.reviewkd.weight = 1.4
model.distill_terms.nd.weight = 1.0
train.output_dir = "output/R50_from_R101_nd_lazy"
