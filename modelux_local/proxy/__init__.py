"""The HTTP surface (litestar): wire formats in and out; calls go through calls/dispatch.py."""
