"""Job functions for the parallel runner's tests, in a module of their own so that the spawned
worker processes import only this (not the test module and the detectron2 it pulls in)."""

import os

from nd_det.errors import UserError


def square(x):
    return {"value": x * x, "pid": os.getpid()}


def fails(message):
    raise UserError(message)
