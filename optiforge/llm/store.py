"""Old import path of :mod:`optiforge.llm.serving.store`, kept so that existing imports work.

This module *is* that one (an alias in ``sys.modules``, not a copy): names, patches and
state are shared. New code imports ``optiforge.llm.serving.store``.
"""

import sys

from optiforge.llm.serving import store

sys.modules[__name__] = store
