"""Alias -> plan (pure), and the attempt loop that applies a plan's retry/fallback rules."""
from .plan import Plan, Router, TargetPlan
from .executor import Attempt, execute

__all__ = ["Plan", "Router", "TargetPlan", "Attempt", "execute"]
