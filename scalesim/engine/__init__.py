"""Serving-engine integrations. Only `scalesim.engine.sglang` imports SGLang."""
