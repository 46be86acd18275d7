"""docs/paper_rows.md: one line per result row of the paper's listing (20 rows, 26 results), each
naming config files that exist and tests that exist; its classification configs are the ones
test_paper_pairs_train.py trains."""

import os
import re

from .test_paper_pairs_train import ROW_CONFIGS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO, "docs", "paper_rows.md")
# the listing: (dataset, published value(s), method) per row, in its order
LISTING = [
    ("CIFAR-100", "77.93", "ReviewKD++ resnet32x4 -> ShuffleNetV2"),
    ("CIFAR-100", "77.68", "ReviewKD++ resnet32x4 -> ShuffleNetV1"),
    ("CIFAR-100", "76.28", "DKD++ resnet32x4 -> resnet8x4"),
    ("CIFAR-100", "75.66", "ReviewKD++ WRN-40-2 -> WRN-40-1"),
    ("CIFAR-100", "72.53", "KD++ resnet56 -> resnet20"),
    ("CIFAR-100", "70.82", "DKD++ resnet50 -> MobileNetV2"),
    ("COCO val2017", "41.03 / 61.8 / 44.94", "ReviewKD++ Faster R-CNN R101 -> R50"),
    ("COCO val2017", "37.43 / 57.96 / 40.15", "ReviewKD++ Faster R-CNN R101 -> R18"),
    ("COCO val2017", "34.51 / 55.18 / 37.21", "ReviewKD++ Faster R-CNN R50 -> MobileNetV2"),
    ("ImageNet", "83.6", "KD++ RegNetY-16GF -> ViT-B"),
    ("ImageNet", "79.15", "KD++ ResNet-152 -> ResNet-101"),
    ("ImageNet", "77.48", "KD++ ResNet-152 -> ResNet-50"),
    ("ImageNet", "75.53", "KD++ ResNet-152 -> ResNet-34"),
    ("ImageNet", "72.96", "ReviewKD++ ResNet-50 -> MobileNetV1"),
    ("ImageNet", "72.54", "KD++ ResNet-152 -> ResNet-18"),
    ("ImageNet", "72.54", "KD++ ResNet-101 -> ResNet-18"),
    ("ImageNet", "72.53", "KD++ ResNet-50 -> ResNet-18"),
    ("ImageNet", "72.07", "KD++ ResNet-34 -> ResNet-18"),
    ("ImageNet", "71.84", "KD++ ViT-B -> ResNet-18"),
    ("ImageNet", "71.46", "KD++ ViT-S -> ResNet-18"),
]


def _rows():
    lines = open(DOC, encoding="utf-8").read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| # | task |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_one_line_per_row_of_the_listing():
    rows = _rows()
    assert len(rows) == 20
    results = 0
    for number, (row, (dataset, value, method)) in enumerate(zip(rows, LISTING), 1):
        assert row[0] == str(number) and row[2] == dataset and row[4] == value, row
        assert row[5].startswith(method), row
        assert row[9].startswith("config builds and runs 2 steps on CPU in the suite") or row[
            9
        ].startswith("both configs build and run 2 steps on CPU in the suite"), row
        assert row[9].endswith("not trained here"), row
        results += len(value.split(" / "))
    assert results == 26


def test_every_named_config_and_test_exists():
    classification = set()
    for row in _rows():
        configs = re.findall(r"`(configs/[^`]+\.yaml)`", row[6])
        assert configs, row
        for config in configs:
            assert os.path.isfile(os.path.join(REPO, config)), config
            if config.startswith("configs/classification/"):
                classification.add(config[len("configs/classification/") :])
        tests = re.findall(r"`((?:cls/)?test_\w+\.py)::(\w+)(?:\[([^\]]+)\])?`", row[8])
        assert tests, row
        for path, function, parameter in tests:
            path = path.replace("cls/", "classification/")
            source = open(os.path.join(REPO, "tests", path), encoding="utf-8").read()
            assert f"def {function}(" in source, (path, function)
            if parameter:  # one the test is parametrized with (a quoted value in its file)
                assert f'"{parameter}"' in source, (path, parameter)
    # the classification configs of the rows are those trained two steps in the suite
    assert classification == set(ROW_CONFIGS)
