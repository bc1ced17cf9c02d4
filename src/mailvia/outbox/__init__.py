"""Use cases: submit, dispatch, recover, expire. They see only the core and their ports."""
