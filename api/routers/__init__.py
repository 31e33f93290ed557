"""Thin routers: validate, authorize through api.auth.authorize, call one service function."""
