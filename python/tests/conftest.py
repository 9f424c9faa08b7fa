import os

from hypothesis import HealthCheck, settings

# CI runs many hypothesis examples per test; locally `HYPOTHESIS_PROFILE=dev` is quicker.
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
