"""Smoke: the demo routing (users -> user-service with /api stripped, the rest -> legacy)."""
from harness import Stack, request


def test_routes_users_to_user_service_and_rest_to_legacy():
    with Stack() as s:
        st, h, body = request(s.port, "GET", "/api/users/42")
        assert st == 200, (st, body)
        assert h["x-gateway-upstream"] == "user-service"
        assert s.mock("user-service").stats()["by_path"] == {"/users/42": 1}
        st, h, body = request(s.port, "GET", "/api/orders/7")
        assert st == 200 and h["x-gateway-upstream"] == "legacy"
        assert s.mock("legacy").stats()["by_path"] == {"/api/orders/7": 1}
