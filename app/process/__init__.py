"""The worker process under gunicorn: a stop drains, a reload hands over without a stall."""
