"""Numbers shared by the data layer, the renderers and the models: object type codes, feature
columns and caps of the padded layout.

Defined once here, in a module that imports nothing, so that `engine.data.objects` (shards, loader,
set models) and `kernels` (which knows nothing of the engine above it) both read them without a
cycle. The CUDA kernels and the CPU twin repeat the codes and the kernels' caps in
kernels/render_common.h (RC_*); tests/test_contracts.py ties the two sides.
"""

PAD, ELECTRON, MUON, JET, BJET, MET = 0, 1, 2, 3, 4, 5
OBJECT_TYPES = {"pad": PAD, "electron": ELECTRON, "muon": MUON, "jet": JET, "bjet": BJET, "met": MET}
"""Type code of each object kind; 0 marks a padding slot."""
NUM_TYPES = len(OBJECT_TYPES)

FEATURES = ("pt", "eta", "phi", "mass", "btag", "charge")
"""Columns of the padded object features: pt [GeV], eta, phi [rad], mass [GeV], btag, charge."""
F_PT, F_ETA, F_PHI, F_MASS, F_BTAG, F_CHARGE = range(len(FEATURES))

CONSTITUENT_FEATURES = ("pt", "eta", "phi", "charge", "pid")
"""Columns of the padded large-radius-jet constituents: pt [GeV], eta, phi [rad], charge, pid."""
FATJET_FEATURES = ("pt", "eta", "phi", "mass")
FATJET_WIDTH = len(FATJET_FEATURES)
"""Columns of the large-radius jet itself: pt [GeV], eta, phi [rad], mass [GeV]."""
KERNEL_MIN_FEATURES = F_PHI + 1
"""Columns the kernels read of each object and constituent at least: pt, eta, phi."""

DEFAULT_CAP = 16
"""Object slots per event in the padded layout (MET included)."""
DEFAULT_CONSTITUENT_CAP = 128
"""Constituent slots per large-radius jet in the padded layout."""
MAX_OBJECTS = 64
"""Objects the kernels draw per event; later ones are skipped and counted."""
MAX_CONSTITUENTS = 256
"""Constituents the kernels deposit per jet; later ones are skipped and counted."""
MAX_CHANNELS = 8
"""Background slots in the kernels' parameter table: the most channels an image may have."""
