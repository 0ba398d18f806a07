"""pytest fixtures that hold port claims for the length of a test."""

from __future__ import annotations
