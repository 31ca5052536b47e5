"""Hard negatives for a real corpus, from files: ``negkit mine`` and :func:`mine`.

Read query → positive pairs (and a corpus), embed them into a sharded, resumable cache, search each query's
nearest documents (exact chunked, or a faiss index), drop the false negatives (known positives, same texts, a
rank window, margins to the positive, a maximum score, optionally a cross-encoder's scores), sample k negatives
(top, random, or hardness-weighted with importance log-weights) and write a training file with a manifest and a
report. Under ``torchrun`` the work is split over the processes with the same output as one process.
"""

from negkit.mining.filters import REASONS
from negkit.mining.inputs import MiningError, MiningInput, load_mining_input, match_key
from negkit.mining.mine import MiningResult, MiningSettings, mine
from negkit.mining.outputs import FORMATS
from negkit.mining.sample import SAMPLINGS
from negkit.mining.search import INDEX_KINDS, IndexOptions

__all__ = [
    "FORMATS",
    "INDEX_KINDS",
    "REASONS",
    "SAMPLINGS",
    "IndexOptions",
    "MiningError",
    "MiningInput",
    "MiningResult",
    "MiningSettings",
    "load_mining_input",
    "match_key",
    "mine",
]
