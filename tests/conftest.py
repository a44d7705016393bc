"""Suite-wide settings.

Property tests run derandomized by default, so ``make test`` (and CI) sees the same examples
every run and a red build always means a code change. ``HYPOTHESIS_PROFILE=explore`` draws
fresh, more numerous examples to hunt for new failures locally.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
