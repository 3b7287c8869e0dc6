"""Methods that are pipelines of several stages, by name: each a function from the run's settings to its stages and
whether they get directories of their own (see engine/pipeline.py)."""

from __future__ import annotations

from weakdml.pipelines.noisy_student import noisy_student
from weakdml.pipelines.spice import spice

PIPELINES = {"mbdml4": noisy_student, "spice": spice}
