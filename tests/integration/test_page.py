"""Peon's web page in a real browser against the bed: Debian's chromium (/usr/bin/chromium)
driven by Playwright for Python (its own browser download is not used). A wrong key shows
nothing; the right key lists the servers; Stop and Start on the page reach the cluster and the
page shows the change without a reload; a viewer sees no Stop; a player cannot restore; a
server named `<script>alert(1)</script>` shows as text; at 375 pixels wide nothing overflows
(the screenshot is docs/page-375.png, shown in the README); on the real node, a backup downloaded
through the page is the archive's bytes."""
from __future__ import annotations

import pathlib
import secrets
import shutil

import pytest

from api_helpers import PeonApi
from conftest import fresh_namespace
from gs_helpers import apply_as_user, events_for, gameserver, run_phase, wait_event, wait_phase

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "page-375.png"
EVIL = "<script>alert(1)</script>"
KEYS = {"pal": ("player", "p" * 8 + secrets.token_hex(8)),
        "guest": ("viewer", "v" * 8 + secrets.token_hex(8))}

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(scope="module")
def chromium():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extras)")
    if not pathlib.Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it as root)")
    with sync_api.sync_playwright() as p:
        # As root (the bed's user) Chromium's sandbox cannot start; the page is our own.
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def bed(kube, kubeconfig, clock, tmp_path_factory, operator):
    """Two servers applied as a user (one whose name players see is a script) and peon-api
    with friends' keys: pal a player, guest a viewer; the API's own key is the admin's."""
    ns_gen = fresh_namespace(kube, "t")
    ns = next(ns_gen)
    apply_as_user(kube, gameserver("odin", ns, serverName="Friends of Odin"))
    apply_as_user(kube, gameserver("evil", ns, serverName=EVIL))
    for name in ("odin", "evil"):
        wait_phase(kube, ns, name, "Running")
    tmp = tmp_path_factory.mktemp("page")
    keys_file = tmp / "keys.yaml"
    keys_file.write_text("".join(f"{n}: {{key: {k}, role: {r}}}\n" for n, (r, k) in KEYS.items()))
    api = PeonApi(kubeconfig, ns, clock.path, tmp / "peon-api.log",
                  args=["--keys-file", str(keys_file)])
    api.ns = ns
    yield api
    log = api.stop()
    assert "Traceback" not in log, log[-3000:]
    for key in [k for _, k in KEYS.values()] + [api.key]:
        assert key not in log  # a key is never logged
    next(ns_gen, None)


def open_page(chromium, api, key, width=1000):
    page = chromium.new_page(viewport={"width": width, "height": 900})
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(f"http://127.0.0.1:{api.port}/")
    page.fill("#key", key)
    page.click("#login button[type=submit]")
    return page


def card(page, name):
    return page.locator("#servers li", has=page.locator(".title", has_text=name))


def test_a_wrong_key_is_refused_and_nothing_is_shown(chromium, bed):
    page = open_page(chromium, bed, "not-the-key-" + secrets.token_hex(8))
    page.wait_for_selector("#login-error:has-text('not known')")
    assert not page.is_visible("#board")
    assert "Friends of Odin" not in page.content() and "odin" not in page.inner_text("body")
    page.close()


def test_the_right_key_lists_servers_and_stop_and_start_reach_the_cluster_live(chromium, bed, kube):
    page = open_page(chromium, bed, KEYS["pal"][1])
    odin = card(page, "Friends of Odin")
    odin.locator(".state").wait_for()
    assert page.locator("#servers li").count() == 2
    assert odin.locator(".state").inner_text() == "Running"
    assert page.inner_text("#who-text") == "pal (player)"
    page.evaluate("window.notReloaded = true")
    odin.locator("button.stop").click()
    wait_phase(kube, bed.ns, "odin", "Stopped")  # the cluster did it
    page.wait_for_function(
        "() => [...document.querySelectorAll('#servers li')].some(li => "
        "li.querySelector('.title').textContent === 'Friends of Odin' && "
        "li.querySelector('.state').textContent === 'Stopped')", timeout=20_000)
    assert odin.locator("button.start").is_visible() and not odin.locator("button.stop").is_visible()
    odin.locator("input.hours").fill("3")
    odin.locator("button.start").click()
    wait_phase(kube, bed.ns, "odin", "Running")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#servers li .state')].every(s => s.textContent === 'Running')",
        timeout=20_000)
    assert page.evaluate("window.notReloaded") is True  # the same page all along
    left = odin.locator(".left").inner_text()
    assert left.endswith(" h") and 2.5 <= float(left.split()[0]) <= 3.0, left
    wait_event(kube, bed.ns, "odin", None, "pal (player) stopped the server through peon-api")
    messages = [e["message"] for e in events_for(kube, bed.ns, "odin")]
    assert "pal (player) stopped the server through peon-api" in messages, messages
    assert any(m.startswith("pal (player) started the server (hours 3)") for m in messages), messages
    page.close()


def test_a_viewer_sees_no_stop_and_a_player_cannot_restore(chromium, bed, kube):
    guest = open_page(chromium, bed, KEYS["guest"][1])
    odin = card(guest, "Friends of Odin")
    odin.locator(".state").wait_for()
    assert guest.inner_text("#who-text") == "guest (viewer)"
    for button in ("stop", "start", "extend", "backup"):
        assert not odin.locator(f"button.{button}").is_visible(), button
    assert not odin.locator("details.backups").is_visible()
    # Asked directly, the API refuses the viewer's stop too.
    status = guest.evaluate("k => fetch('/page/stop/valheim.odin', {method: 'POST', headers: "
                            "{'X-Api-Key': k}}).then(r => r.status)", KEYS["guest"][1])
    assert status == 403
    guest.close()

    # An admin backs up from the page and sees it listed with Restore; a player is refused.
    admin = open_page(chromium, bed, bed.key)
    odin = card(admin, "Friends of Odin")
    odin.locator("button.backup").click()
    admin.wait_for_selector("#status:has-text('Backup started for Friends of Odin')")
    runs = [b for b in kube.list("GameServerBackup", bed.ns) if b["spec"]["gameServer"] == "odin"]
    assert len(runs) == 1
    run_phase(kube, "GameServerBackup", bed.ns, runs[0]["metadata"]["name"], "Succeeded", timeout=90)
    odin.locator("details.backups summary").click()
    odin.locator(".backup-list button", has_text="Restore").wait_for()
    admin.close()
    player = open_page(chromium, bed, KEYS["pal"][1])
    odin = card(player, "Friends of Odin")
    odin.locator(".state").wait_for()
    assert not odin.locator("details.backups").is_visible()
    status = player.evaluate(
        "([k, b]) => fetch('/page/restore/valheim.odin', {method: 'POST', headers: {'X-Api-Key': k, "
        "'Content-Type': 'application/json'}, body: JSON.stringify({backup: b})}).then(r => r.status)",
        [KEYS["pal"][1], runs[0]["metadata"]["name"]])
    assert status == 403
    assert kube.list("GameServerRestore", bed.ns) == []
    player.close()


def test_a_script_name_is_text_and_nothing_overflows_at_375_pixels(chromium, bed):
    page = open_page(chromium, bed, bed.key, width=375)
    evil = card(page, EVIL)
    evil.locator(".state").wait_for()
    assert evil.locator(".title").inner_text() == EVIL  # shown as the text it is
    assert page.evaluate("document.querySelectorAll('script').length") == 1  # only app.js
    page.wait_for_timeout(500)
    assert page.dialogs == []  # alert(1) never ran
    fit = page.evaluate("""() => {
        const w = document.documentElement.clientWidth, out = [];
        for (const el of document.querySelectorAll('body *')) {
            const r = el.getBoundingClientRect();
            if (r.width && getComputedStyle(el).visibility !== 'hidden' && (r.right > w + 0.5 || r.left < -0.5))
                out.push(el.tagName + '.' + el.className + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
        }
        return {width: w, scroll: document.documentElement.scrollWidth, over: out};
    }""")
    assert fit["width"] == 375 and fit["scroll"] <= 375 and fit["over"] == [], fit
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    page.close()


# --- a download on the real node ------------------------------------------------------------------
# The real node's fixtures are conftest's (the node joined, the images imported, the test
# game's catalogue entry); the operator here watches only pg-* namespaces, with the image its
# Jobs and the download's pod really run.


@pytest.fixture(scope="module")
def node_page(kube, kubeconfig, testgame, tmp_path_factory):
    from conftest import Operator
    from realnode_helpers import OPERATOR_IMAGE, tg_server
    tmp = tmp_path_factory.mktemp("node-page")
    op = Operator(kubeconfig, tmp / "operator.log",
                  ["--job-image", OPERATOR_IMAGE, "--namespace", "pg-*"])
    ns_gen = fresh_namespace(kube, "pg")
    ns = next(ns_gen)
    try:
        apply_as_user(kube, tg_server("loot", ns))
        wait_phase(kube, ns, "loot", "Running", timeout=180)
        api = PeonApi(kubeconfig, ns, None, tmp / "peon-api.log")
        api.ns = ns
        yield api
        log = api.stop()
        assert "Traceback" not in log and api.key not in log, log[-3000:]
    finally:
        next(ns_gen, None)
        op.stop()
    assert "Traceback" not in op.log(), op.log()[-3000:]


@pytest.mark.timeout(900)  # a fresh machine builds the node's images first
def test_a_download_on_the_page_delivers_the_archives_bytes(chromium, node_page, kube, tmp_path):
    import hashlib
    from realnode_helpers import archive_digest, volume_dir
    ns = node_page.ns
    page = open_page(chromium, node_page, node_page.key)
    loot = card(page, "loot")
    loot.locator(".state").wait_for()
    loot.locator("button.backup").click()
    page.wait_for_selector("#status:has-text('Backup started for loot')")
    runs = [b for b in kube.list("GameServerBackup", ns) if b["spec"]["gameServer"] == "loot"]
    assert len(runs) == 1
    name = runs[0]["metadata"]["name"]
    done = run_phase(kube, "GameServerBackup", ns, name, "Succeeded", timeout=180)
    loot.locator("details.backups summary").click()
    button = loot.locator(".backup-list button", has_text="Download")
    button.wait_for()
    with page.expect_download(timeout=120_000) as got:
        button.click()
    saved = tmp_path / got.value.suggested_filename
    got.value.save_as(saved)
    assert saved.name == f"{name}.tar.gz"
    page.wait_for_selector(f"#status:has-text('Downloaded {name}.')")
    # The bytes the browser saved are the archive in the backups volume on the node's disk,
    # and the checksum the backup recorded.
    archive = volume_dir(kube, ns, "loot-backups") / f"{name}.tar.gz"
    data = saved.read_bytes()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(archive.read_bytes()).hexdigest() \
        == done["sha256"]
    assert "worlds/Dedicated/world.db" in archive_digest(saved)  # the game's world, not an error page
    page.close()
