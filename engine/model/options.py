"""The command-line options that choose the network, shared by every command that runs it.

Kept free of torch so ``instructir --help`` and argument errors stay instant.
"""

from __future__ import annotations

import argparse


def add_restorer_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--device``, ``--tile``, ``--fast``: how ``restore``, ``batch`` and ``serve`` pick the network."""
    parser.add_argument("--model", default="default", help="bundled model name, instructir-7d, or a model folder")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cuda, mps or cpu")
    parser.add_argument("--tile", type=int, default=0, help="tile side in pixels (default: whole image when it fits)")
    parser.add_argument("--fast", action="store_true", help="bf16 on CPUs that support it (slightly less exact)")
