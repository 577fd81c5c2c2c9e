"""DHP: Differentiable Meta Pruning via HyperNetworks (Li et al., ECCV 2020).

The method class and its settings live in method.py; the hypernetworks in hyper.py, the latent
vectors in latents.py, the proximal search in search.py, the landing on the target in landing.py
and the plain compact CNN in compact.py.
"""

from methods.dhp.compact import SearchNet, compact, generate_sliced, materialise
from methods.dhp.landing import cut_to_target
from methods.dhp.method import DHP, build_search_net, last_stream_groups
from methods.dhp.search import DHPSearch, GammaController

__all__ = [
    "DHP",
    "DHPSearch",
    "GammaController",
    "SearchNet",
    "build_search_net",
    "compact",
    "cut_to_target",
    "generate_sliced",
    "last_stream_groups",
    "materialise",
]
