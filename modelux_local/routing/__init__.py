"""Alias -> plan (pure), and the attempt loop that applies a plan's retry/fallback rules."""
from .executor import Attempt, execute
from .plan import Plan, Router, TargetPlan

__all__ = ["Plan", "Router", "TargetPlan", "Attempt", "execute"]
