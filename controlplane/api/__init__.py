"""REST API for tenancy, and the base classes every app's API builds on."""
