"""Claim network ports without races, on asyncio and trio."""

from __future__ import annotations
