"""Test in production: shadow, canary, A/B, interleaving, bandits (not built yet; see the issues)."""

__all__: list[str] = []
