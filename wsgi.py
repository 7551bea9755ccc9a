"""WSGI entry point: `gunicorn -k gevent wsgi:app`."""

from gevent import monkey

monkey.patch_all()  # before any other import, so every socket and lock is cooperative

from app import create_app  # noqa: E402

app = create_app()
