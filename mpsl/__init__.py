"""mpsl: pipelined, multihop split learning (PiPar + MP-SL) with FL, SL and SFL baselines."""

__version__ = "0.1.0"
