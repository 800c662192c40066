"""The cutover dashboard (issue 12 §2): GET /dashboard (the page, compiled into the binary,
served without the token), GET /admin/dashboard (its JSON: 401 without the token; shape;
per-side numbers that move under load; shadow mismatches with the latest diff; migration
progress; history after a change), and the page itself in headless Chromium driven by
selenium: token entered, live numbers change under load, rollback pressed (confirm
accepted), the route table changed as the admin API shows; a flip through the page's
prompt; a plan paused from its panel. Screenshots go to
BUILD/dashboard-*.png. The browser test is SKIPPED (with the reason) only when chromium or
its driver cannot start."""
import json
import os
import sys
import threading
import time

from harness import BUILD, ROOT, Skip, Stack, request, wait_port, wait_until

TOKEN = "test-token"
AUTH = {"Authorization": "Bearer " + TOKEN}
JSON_AUTH = dict(AUTH, **{"Content-Type": "application/json"})


def routes():
    return [{"id": "orders", "path": "/api/orders/{id}", "upstream": "legacy",
             "split": {"legacy": 50, "order-service": 50},
             "rewrites": {"order-service": {"template": "/orders/{id}"}}},
            # a shadow to a candidate that answers a *user* document: every comparison differs
            {"id": "orders-shipment", "path": "/api/orders/{id}/shipment", "upstream": "legacy",
             "shadow": {"upstream": "order-service"},
             "rewrites": {"order-service": {"template": "/users/{id}"}}},
            {"id": "legacy", "path": "/**", "upstream": "legacy"}]


def stack(workers=1):
    # order-service fails a fifth of its answers: its error rate shows, legacy's stays 0
    s = Stack(upstreams={"legacy": 1, "order-service": ["--error-rate", "0.2"]}, routes=routes(),
              workers=workers)
    wait_port(s.admin_port)
    return s


def dash(s, headers=AUTH):
    st, h, b = request(s.admin_port, "GET", "/admin/dashboard", headers)
    return st, h, (json.loads(b) if st == 200 else b)


def admin(s, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    st, _, b = request(s.admin_port, method, path, JSON_AUTH if body is not None else AUTH, data)
    return st, (json.loads(b) if b.strip() else None)


class Load:
    """GET /api/orders/ord-N and its shipment from one thread until stopped."""

    def __init__(self, port):
        self.port, self.stop_flag, self.n = port, threading.Event(), 0
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        i = 0
        while not self.stop_flag.is_set():
            try:
                request(self.port, "GET", "/api/orders/ord-%d" % (i % 20))
                request(self.port, "GET", "/api/orders/ord-%d/shipment" % (i % 20))
                self.n += 2
            except Exception:  # noqa: BLE001 — counted by the assertions on the gateway side
                time.sleep(0.01)
            i += 1

    def stop(self):
        self.stop_flag.set()
        self.t.join(15)


def route_of(d, rid):
    return next(r for r in d["routes"] if r["id"] == rid)


def side_of(r, up):
    return next(x for x in r["sides"] if x["upstream"] == up)


def test_dashboard_page_and_token():
    with stack() as s:
        st, h, b = request(s.admin_port, "GET", "/dashboard")
        assert st == 200 and h.get("content-type", "").startswith("text/html"), (st, h)
        assert b"/dashboard/app.js" in b and b"Cutover dashboard" in b
        assert "frame-ancestors 'none'" in h.get("content-security-policy", ""), h
        for path, kind in (("/dashboard/app.js", "text/javascript"), ("/dashboard/app.css", "text/css")):
            st, h, b = request(s.admin_port, "GET", path)
            assert st == 200 and h["content-type"].startswith(kind) and len(b) > 500, (path, st, h)
        st, _, b = request(s.admin_port, "GET", "/dashboard/nope.js")
        assert st == 404 and json.loads(b)["status"] == 404, (st, b)
        st, _, _ = request(s.admin_port, "POST", "/dashboard")
        assert st == 405
        # the data needs the token, as everything under /admin/
        st, h, b = dash(s, {})
        assert st == 401 and h.get("www-authenticate") == "Bearer", (st, h, b)
        st, _, _ = dash(s, {"Authorization": "Bearer wrong"})
        assert st == 401
        st, _, _ = request(s.admin_port, "POST", "/admin/dashboard", AUTH)
        assert st == 405
        st, h, d = dash(s)
        assert st == 200 and h["content-type"] == "application/json", (st, h)
        for k in ("generated_ms", "version", "legacy_upstream", "window_s", "series_s", "progress",
                  "routes", "cache", "plans", "history"):
            assert k in d, (k, d.keys())
        assert d["legacy_upstream"] == "legacy" and d["series_s"] == 60
        assert [r["id"] for r in d["routes"]] == ["orders", "orders-shipment", "legacy"]
        o = route_of(d, "orders")
        assert o["split"] == {"legacy": 50, "order-service": 50} and o["new_share"] == 50.0, o
        assert [(x["upstream"], x["role"], x["weight"]) for x in o["sides"]] == \
            [("legacy", "split", 50.0), ("order-service", "split", 50.0)], o["sides"]
        assert o["sides"][0]["series"] is None  # no traffic yet: no series
        sh = route_of(d, "orders-shipment")
        assert sh["shadow"] == "order-service" and sh["domain"] == "orders", sh
        # domains: the route id up to the first '.' or '-'
        doms = {p["domain"]: p for p in d["progress"]["domains"]}
        assert set(doms) == {"orders", "legacy"}, doms
        assert doms["orders"]["routes"] == 2 and doms["orders"]["route_share"] == 25.0, doms
        assert d["progress"]["overall"]["routes"] == 3


def test_dashboard_numbers_move_under_load():
    with stack(workers=2) as s:  # the figures are two workers' counters summed
        st, _, _ = dash(s)  # the first poll starts the sampler
        assert st == 200
        load = Load(s.port)
        try:
            def moving():
                d = dash(s)[2]
                o = route_of(d, "orders")
                lg, new = side_of(o, "legacy"), side_of(o, "order-service")
                return (lg["requests"] > 20 and new["requests"] > 20 and new["errors"] > 0 and
                        route_of(d, "orders-shipment")["shadow_stats"]["mismatched"] > 0 and d)
            d = wait_until(moving, 20, "dashboard figures under load", step=0.3)
            o = route_of(d, "orders")
            lg, new = side_of(o, "legacy"), side_of(o, "order-service")
            print("    orders: legacy %.1f req/s err %s p50 %s p99 %s; order-service %.1f req/s err %.1f %%"
                  % (lg["rps"], lg["error_rate"], lg["p50_ms"], lg["p99_ms"], new["rps"], new["error_rate"]))
            assert lg["errors"] == 0 and lg["error_rate"] == 0.0, lg
            assert 0 < new["error_rate"] < 100, new
            assert lg["rps"] > 0 and lg["p50_ms"] > 0 and lg["p99_ms"] >= lg["p50_ms"], lg
            assert len(lg["series"]["rps"]) == 60 and sum(lg["series"]["rps"]) > 0
            assert sum(new["series"]["errors"]) > 0
            assert o["rps"] > 0 and o["error_rate"] > 0
            ss = route_of(d, "orders-shipment")["shadow_stats"]
            assert ss["compared"] >= ss["mismatched"] > 0 and ss["mismatch_rate"] > 0, ss
            assert ss["latest"] and ss["latest"]["diff"] and ss["latest"]["request_id"], ss
            # progress: half of orders' traffic is on order-service, none of the others'
            dom = {p["domain"]: p for p in d["progress"]["domains"]}["orders"]
            assert 0 < dom["requests_new"] < dom["requests"], dom
            assert 5 < dom["traffic_share"] < 50, dom  # orders ~50 %, the shipments 0 %
            # numbers move: a later poll has more requests in its series
            before = sum(side_of(route_of(d, "orders"), "legacy")["series"]["rps"])
            wait_until(lambda: sum(side_of(route_of(dash(s)[2], "orders"), "legacy")["series"]["rps"]) > before,
                       10, "the series grows", step=0.3)
            # a flip shows: the route's share, the progress, the history
            st, j = admin(s, "PATCH", "/admin/routes/orders", {"upstream": "order-service", "split": None})
            assert st == 200, (st, j)

            def flipped():
                d = dash(s)[2]
                o = route_of(d, "orders")
                return (o["new_share"] == 100.0 and d["history"] and
                        d["history"][0].get("route_id") == "orders" and d)
            d = wait_until(flipped, 10, "the flip on the dashboard", step=0.3)
            assert route_of(d, "orders")["primary"] == "order-service"
            # legacy still had traffic in the window: shown as a previous side
            roles = {x["upstream"]: x["role"] for x in route_of(d, "orders")["sides"]}
            assert roles["order-service"] == "primary" and roles.get("legacy") == "previous", roles
            assert d["history"][0]["who"] == "admin", d["history"][0]
        finally:
            load.stop()
        assert load.n > 0


def test_dashboard_shows_plans():
    plain = [{"id": "orders", "path": "/api/orders/{id}", "upstream": "legacy",
              "rewrites": {"order-service": {"template": "/orders/{id}"}}},
             {"id": "legacy", "path": "/**", "upstream": "legacy"}]
    with Stack(upstreams={"legacy": 1, "order-service": 1}, routes=plain) as s:
        wait_port(s.admin_port)
        # too little traffic for a verdict: the plan stays at its shadow step, waiting
        st, j = admin(s, "POST", "/admin/cutovers", {"route": "orders", "target": "order-service",
                                                     "steps": [0, 100], "min_requests": 100000})
        assert st == 200, (st, j)

        def shown():
            d = dash(s)[2]
            return d["plans"] and d["plans"][0].get("verdict") and d
        d = wait_until(shown, 10, "the plan on the dashboard", step=0.3)
        p = d["plans"][0]
        assert p["route"] == "orders" and p["target"] == "order-service" and p["state"] == "running", p
        assert p["weight"] == 0 and p["next_verdict_in_ms"] >= 0, p
        assert p["verdict"]["verdict"] == "wait" and p["verdict"]["needed"] == 100000, p["verdict"]
        assert "evidence" in p and "first_mismatches" in p
        # the plan's step is a route change: in the route table and the history
        o = route_of(d, "orders")
        assert o["shadow"] == "order-service", o
        d = wait_until(lambda: (lambda d: d["history"] and d)(dash(s)[2]), 10, "history", step=0.3)
        assert d["history"][0]["who"] == "cutover" and d["history"][0]["action"] == "cutover-start", d["history"][0]
        # the page's buttons call these; pause shows as paused
        st, j = admin(s, "POST", "/admin/cutovers/orders/pause")
        assert st == 200, (st, j)
        assert dash(s)[2]["plans"][0]["state"] == "paused"


# ---- the page in a real browser -----------------------------------------------------------

def browser(tmp):
    try:
        import selenium  # noqa: F401
    except ImportError:
        # Debian's python3-selenium lives in the system's dist-packages, which a python3 from
        # elsewhere (pyenv, a venv) does not search
        sys.path.append("/usr/lib/python3/dist-packages")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        raise Skip("python3-selenium is not installed (make deps): %s" % e)
    binary = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
    driver = next((p for p in ("/usr/bin/chromedriver",) if os.path.exists(p)), None)
    if not binary or not driver:
        raise Skip("chromium or chromium-driver is not installed (make deps)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1800", "--user-data-dir=" + os.path.join(tmp, "chromium")):
        opts.add_argument(a)
    try:
        return webdriver.Chrome(service=Service(driver, log_output=os.path.join(tmp, "chromedriver.log")),
                                options=opts)
    except TypeError:  # selenium before 4.10: log_path
        return webdriver.Chrome(service=Service(driver, log_path=os.path.join(tmp, "chromedriver.log")),
                                options=opts)
    except Exception as e:  # noqa: BLE001 — any failure to start the browser is a skip
        raise Skip("chromium cannot start: %s" % str(e).strip().splitlines()[0])


def test_dashboard_browser_rollback():
    from harness import Skip as _  # noqa: F401 — Skip propagates to run.py
    with stack() as s:
        try:
            drv = browser(s.tmp)
        except Skip:
            raise
        except Exception as e:  # noqa: BLE001
            raise Skip("chromium cannot start: %s" % e)
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait
        shots = os.path.join(ROOT, BUILD)
        load = None
        try:
            drv.get("http://127.0.0.1:%d/dashboard" % s.admin_port)
            WebDriverWait(drv, 10).until(EC.visibility_of_element_located((By.ID, "token")))
            drv.find_element(By.ID, "token").send_keys(TOKEN)
            drv.find_element(By.ID, "token-save").click()
            WebDriverWait(drv, 10).until(EC.visibility_of_element_located((By.ID, "routes")))
            assert drv.execute_script("return sessionStorage.getItem('gateway-admin-token')") == TOKEN
            load = Load(s.port)

            def text(css):
                # read in one script: the page redraws its tables every second
                return drv.execute_script("var e = document.querySelector(arguments[0]);"
                                          "return e ? e.textContent : '';", css)

            def rps():
                try:
                    return float(text('tr.route-head[data-route="orders"] td.rps'))
                except ValueError:
                    return 0.0
            first = wait_until(lambda: rps() > 0 and rps(), 20, "live req/s on the page", step=0.3)
            # live: the number changes while the load runs (each poll is a new window)
            second = wait_until(lambda: rps() != first and rps(), 15, "the req/s changes", step=0.3)
            spark = drv.execute_script("return document.querySelectorAll("
                                       "'tr.side[data-route=\"orders\"] svg.spark polyline').length")
            assert spark >= 4, "sparklines drawn: rate and errors for both sides (%d)" % spark
            progress = text("#overall-traffic")
            print("    page: orders %.1f then %.1f req/s; progress %r" % (first, second, progress))
            assert "%" in progress, progress
            drv.save_screenshot(os.path.join(shots, "dashboard-live.png"))
            # rollback, confirmed in the browser's dialog
            def press():
                try:
                    drv.find_element(By.CSS_SELECTOR, 'button.rollback[data-route="orders"]').click()
                    return True
                except StaleElementReferenceException:
                    return False  # redrawn between the find and the click: again
            wait_until(press, 10, "pressing rollback", step=0.05)
            alert = WebDriverWait(drv, 5).until(EC.alert_is_present())
            assert "Roll back orders" in alert.text, alert.text
            alert.accept()

            def rolled_back():
                st, r = admin(s, "GET", "/admin/routes/orders")
                return st == 200 and r["upstream"] == "legacy" and "split" not in r and r
            wait_until(rolled_back, 10, "the route rolled back through the admin API")
            wait_until(lambda: text('tr.route-head[data-route="orders"] td.policy').startswith("→ legacy"),
                       10, "the page shows the rollback", step=0.3)
            wait_until(lambda: "rollback" in text("#history"), 10, "the history on the page", step=0.3)
            st, h = admin(s, "GET", "/admin/routes/history")
            assert h["changes"][0]["action"] == "rollback" and h["changes"][0]["who"] == "admin", h
            drv.save_screenshot(os.path.join(shots, "dashboard-rolled-back.png"))

            def click(css):
                def once():
                    try:
                        drv.find_element(By.CSS_SELECTOR, css).click()
                        return True
                    except StaleElementReferenceException:
                        return False
                wait_until(once, 10, "pressing " + css, step=0.05)
            # flip: the prompt asks the upstream, then the confirm
            click('button.flip[data-route="orders-shipment"]')
            prompt = WebDriverWait(drv, 5).until(EC.alert_is_present())
            prompt.send_keys("order-service")
            prompt.accept()
            WebDriverWait(drv, 5).until(EC.alert_is_present()).accept()
            wait_until(lambda: admin(s, "GET", "/admin/routes/orders-shipment")[1]["upstream"] == "order-service",
                       10, "the flip through the admin API")
            # a plan (too little traffic for a verdict: it waits), paused from its panel
            st, j = admin(s, "POST", "/admin/cutovers", {"route": "orders", "target": "order-service",
                                                         "steps": [0, 100], "min_requests": 10 ** 6})
            assert st == 200, (st, j)
            wait_until(lambda: "running" in text('.plan[data-route="orders"]'), 10, "the plan panel", step=0.3)
            click('.plan[data-route="orders"] button.plan-pause')
            alert = WebDriverWait(drv, 5).until(EC.alert_is_present())
            assert "pause the cutover plan of orders" in alert.text, alert.text
            alert.accept()
            wait_until(lambda: admin(s, "GET", "/admin/cutovers/orders")[1]["state"] == "paused", 10,
                       "the plan paused through the admin API")
            wait_until(lambda: "paused" in text('.plan[data-route="orders"] .state'), 10, "paused on the page", step=0.3)
            wait_until(lambda: "cutover-pause" in text("#history") or "cutover-start" in text("#history"), 10,
                       "the plan's changes in the page's history", step=0.3)
            drv.save_screenshot(os.path.join(shots, "dashboard-plan-paused.png"))
            print("    screenshots: %s/dashboard-live.png, dashboard-rolled-back.png, dashboard-plan-paused.png"
                  % shots)
        finally:
            if load:
                load.stop()
            drv.quit()


def test_dashboard_cache_hit_rate_per_route():
    """The user cache per route (issue 12 §2): each cached route's hits and lookups over the
    window on the dashboard, and per route and upstream in /metrics."""
    from harness import metrics
    rts = [{"id": "users", "path": "/api/users/**", "upstream": "user-service",
            "rewrite": {"strip_prefix": "/api"}, "cache": True},
           {"id": "people", "path": "/api/people/{id}", "upstream": "user-service",
            "rewrite": {"template": "/users/{id}"}, "cache": True},
           {"id": "legacy", "path": "/**", "upstream": "legacy"}]
    with Stack(routes=rts) as s:
        wait_port(s.admin_port)
        assert dash(s)[0] == 200  # the first poll starts the sampler: later lookups count
        time.sleep(1.2)           # past the baseline sample
        for rnd in range(4):      # users: 5 misses, then 15 hits
            for i in range(5):
                st, h, _ = request(s.port, "GET", "/api/users/%d" % i)
                assert st == 200 and h.get("x-cache") == ("MISS" if rnd == 0 else "HIT"), (st, h)
        for i in range(4):        # people: 4 misses
            assert request(s.port, "GET", "/api/people/%d" % (10 + i))[0] == 200
        assert request(s.port, "GET", "/echo/other")[0] == 200  # not cached

        def shown():
            d = dash(s)[2]
            u = route_of(d, "users")["cache_stats"]
            return u["lookups"] == 20 and route_of(d, "people")["cache_stats"]["lookups"] == 4 and d
        d = wait_until(shown, 10, "the cache figures on the dashboard", step=0.3)
        u, p = route_of(d, "users")["cache_stats"], route_of(d, "people")["cache_stats"]
        assert (u["hits"], u["stale"], u["hit_rate"]) == (15, 0, 75.0), u
        assert (p["hits"], p["hit_rate"]) == (0, 0.0), p
        lg = route_of(d, "legacy")["cache_stats"]
        assert lg["lookups"] == 0 and lg["hit_rate"] is None, lg
        assert d["cache"]["lookups"] == 24 and d["cache"]["hits"] == 15, d["cache"]
        m = metrics(s)
        key = 'gateway_cache_route_requests_total{route="%s",upstream="user-service",result="%s"}'
        assert (m[key % ("users", "hit")], m[key % ("users", "miss")],
                m[key % ("users", "stale")]) == (15, 5, 0), m
        assert (m[key % ("people", "hit")], m[key % ("people", "miss")]) == (0, 4), m
        assert not [k for k in m if "cache_route" in k and "legacy" in k], m
