"""The built-in checks: thin pytest files over `chargeback.verdicts`, with the plugin's fixtures
(`pytest --run runs/latest` runs them from any folder)."""
