"""The applications (demo, ablation, benchmark) live in projects/, outside the library; their
tests import them as the tools/ launchers do, with projects/ on the path."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "projects"))
