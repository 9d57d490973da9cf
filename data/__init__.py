"""The sample data, installed as the package ``bertflow.sample_data`` (pyproject.toml maps it
onto this folder) so that ``bertflow init`` copies it out of the wheel; see README.md here."""
