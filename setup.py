"""nd-det: ND-loss knowledge distillation for detectron2 detectors and torchvision classifiers."""

from setuptools import find_packages, setup

setup(
    name="nd-det",
    version="0.1.0",
    description="Distill detectron2 detectors (and classifiers) with the ND loss "
    "(feature norm and direction regularisation): KD++, DKD++, ReviewKD++.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["nd_det", "nd_det.*"]),
    # detectron2 is deliberately absent: its authors do not publish it on PyPI, so pip could never
    # resolve it.  Install it yourself (scripts/setup_env.sh does) before using nd_det's detection
    # parts; nd_det.losses and nd_det.classification need only torch/torchvision.
    install_requires=[
        "torch>=2.0",
        "torchvision",
        "numpy",
        "pyyaml",
        "fvcore",
        "pycocotools",
    ],
    # timm: the ViT-S teacher and the DeiT-B student of the paper's ImageNet rows (torchvision
    # has neither) and the DeiT augmentation
    # onnx: tools/export_model.py --format onnx (torch's dynamo exporter needs onnx and
    # onnxscript; the parity check runs the file in ONNX Runtime); the versions tested here
    extras_require={
        "test": ["pytest", "pytest-xdist"],
        "demo": ["matplotlib"],
        "timm": ["timm>=0.9"],
        "onnx": ["onnx>=1.23", "onnxscript>=0.7", "onnxruntime>=1.32"],
    },
)
