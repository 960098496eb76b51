"""avsearch: neural architecture search for learning to hash videos.

Declare a search space as a typed graph, compile it to a supernet, search it, and get back a
derived architecture with weights, a diagram and binary codes.

Importing avsearch also registers the ``avsearch::selective_scan`` op, which
``torch.export.load`` needs to read exported programs.
"""
from __future__ import annotations

from avsearch._version import __version__
from avsearch import ops  # noqa: E402,F401  (registers the scan custom op)
from avsearch.arch import Architecture  # noqa: E402
from avsearch.errors import ArchError, AvsearchInputError, SpaceError  # noqa: E402
from avsearch.graph import SearchSpace, TensorType  # noqa: E402
from avsearch.ops import OpConfig, register_op, selective_scan  # noqa: E402
from avsearch.spaces import Option, get_space, list_spaces, register_space  # noqa: E402
from avsearch.supernet import Network, binarize, compile_space  # noqa: E402

__all__ = ["Architecture", "ArchError", "AvsearchInputError", "Network", "OpConfig", "Option",
           "SearchSpace", "SpaceError", "TensorType", "binarize", "compile_space", "get_space",
           "list_spaces", "register_op", "register_space", "selective_scan", "__version__"]
