import os

from hypothesis import settings

# CI runs the decoder fuzzing at full strength; locally a lighter profile keeps iterations fast.
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
