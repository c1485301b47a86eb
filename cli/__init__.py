"""The ``fedvault`` command line."""
