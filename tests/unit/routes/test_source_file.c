/* test_source_file.c — routes/source_file: the routes file watched through its directory.
 * Each test runs a real libuv loop on a temporary directory, changes the file the way
 * editors and tools do (rename over it, write in place, delete it), and states how many
 * callbacks must follow and with what. Every test ends by stopping the source and closing
 * the loop: a handle left open fails it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "routes/matcher.h"
#include "routes/route_edit.h"
#include "routes/route_table.h"
#include "routes/source_file.h"

static const char *const UPSTREAMS[] = { "legacy", "user-service", "order-service" };
#define DEBOUNCE_MS 150
#define QUIET_MS 450 /* three debounce periods: long enough for a stray second callback */

typedef struct fixture {
    uv_loop_t loop;
    uv_timer_t stopper;
    char dir[64];
    char file[128];
    rt_file_source *src;
    int calls;
    int tables;         /* callbacks with a table */
    rt_table *last;     /* the last table delivered (held) */
    char last_err[1024]; /* "" when the last callback had a table */
    int stop_in_cb;
} fixture;

static void on_table(rt_table *t, const char *err, void *arg)
{
    fixture *f = arg;
    f->calls++;
    if (t) {
        assert_null(err);
        f->tables++;
        rt_table_unref(f->last);
        f->last = t;
        f->last_err[0] = '\0';
    } else {
        assert_non_null(err);
        snprintf(f->last_err, sizeof(f->last_err), "%s", err);
    }
    if (f->stop_in_cb) {
        rt_file_source_stop(f->src);
        rt_file_source_stop(f->src); /* twice is fine */
    }
}

static void write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

/* The editor's way: write a new file beside it, rename it over the old one. */
static void rename_over(fixture *f, const char *text)
{
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s/routes.json.swp", f->dir);
    write_text(tmp, text);
    assert_int_equal(rename(tmp, f->file), 0);
}

static const char *doc_with_id(const char *id)
{
    static char doc[256];
    snprintf(doc, sizeof(doc), "{\"routes\":[{\"id\":\"%s\",\"path\":\"/a\",\"upstream\":\"legacy\"}]}",
             id);
    return doc;
}

static const char *last_id(const fixture *f)
{
    assert_non_null(f->last);
    return rt_table_route(f->last, 0)->id;
}

static void on_stopper(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* Runs the loop for MS milliseconds. */
static void run_for(fixture *f, uint64_t ms)
{
    uv_timer_start(&f->stopper, on_stopper, ms, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&f->stopper);
}

/* Runs the loop until there have been CALLS callbacks, failing after 5 s. */
static void run_until_calls(fixture *f, int calls)
{
    for (int waited = 0; f->calls < calls; waited += 10) {
        if (waited > 5000)
            fail_msg("waited 5 s for callback %d, got %d", calls, f->calls);
        run_for(f, 10);
    }
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_source_XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->file, sizeof(f->file), "%s/routes.json", f->dir);
    write_text(f->file, doc_with_id("v0"));
    uv_loop_init(&f->loop);
    uv_timer_init(&f->loop, &f->stopper);
    *state = f;
    return 0;
}

static void start(fixture *f)
{
    assert_int_equal(rt_file_source_start(&f->loop, f->file, UPSTREAMS, 3, DEBOUNCE_MS,
                                          on_table, f, &f->src),
                     0);
    assert_non_null(f->src);
}

static int teardown(void **state)
{
    fixture *f = *state;
    rt_file_source_stop(f->src);
    uv_close((uv_handle_t *)&f->stopper, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&f->loop); /* UV_EBUSY when a handle was left open */
    rt_table_unref(f->last);
    DIR *d = opendir(f->dir);
    struct dirent *e;
    char path[400];
    while (d && (e = readdir(d))) {
        snprintf(path, sizeof(path), "%s/%s", f->dir, e->d_name);
        if (e->d_name[0] != '.' || (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")))
            unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(f->dir);
    free(f);
    return rc == 0 && rt__tables_alive() == 0 ? 0 : -1;
}

/* Rename-over, several times in quick succession, plus noise from other files in the
 * directory: one callback, with the last content. Then an in-place write: one more. */
static void test_rename_over_debounced(void **state)
{
    fixture *f = *state;
    start(f);
    char other[160], id[16];
    snprintf(other, sizeof(other), "%s/other.json", f->dir);
    for (int i = 1; i <= 5; i++) {
        snprintf(id, sizeof(id), "v%d", i);
        rename_over(f, doc_with_id(id));
        write_text(other, "{}");
        run_for(f, 20); /* well inside the debounce time */
    }
    run_until_calls(f, 1);
    run_for(f, QUIET_MS);
    assert_int_equal(f->calls, 1);
    assert_string_equal(last_id(f), "v5");
    assert_string_equal(f->last_err, "");

    /* Written in place (truncate, then write): seen too, once. */
    write_text(f->file, doc_with_id("v6"));
    run_until_calls(f, 2);
    run_for(f, QUIET_MS);
    assert_int_equal(f->calls, 2);
    assert_string_equal(last_id(f), "v6");

    /* Other files alone never call back. */
    write_text(other, "[]");
    unlink(other);
    run_for(f, QUIET_MS);
    assert_int_equal(f->calls, 2);
}

static void test_invalid_file(void **state)
{
    fixture *f = *state;
    start(f);
    rename_over(f, "{\"routes\":[{\"id\":\"a\",\"path\":\"/a\",\"upstream\":\"nope\"}]}");
    run_until_calls(f, 1);
    char want[256];
    snprintf(want, sizeof(want), "%s: routes[0].upstream: unknown upstream \"nope\"", f->file);
    assert_string_equal(f->last_err, want);
    assert_int_equal(f->tables, 0);

    rename_over(f, "{\"routes\":[");
    run_until_calls(f, 2);
    snprintf(want, sizeof(want), "%s: line 1 column ", f->file);
    assert_true(strncmp(f->last_err, want, strlen(want)) == 0);

    /* Valid again: a table. */
    rename_over(f, doc_with_id("ok"));
    run_until_calls(f, 3);
    assert_string_equal(f->last_err, "");
    assert_string_equal(last_id(f), "ok");
    run_for(f, QUIET_MS);
    assert_int_equal(f->calls, 3);

    /* Deleted: an error, and the table in force stays the caller's business. */
    unlink(f->file);
    run_until_calls(f, 4);
    snprintf(want, sizeof(want), "%s: cannot read: No such file or directory", f->file);
    assert_string_equal(f->last_err, want);
    assert_int_equal(f->tables, 1);
}

static void test_reload(void **state)
{
    fixture *f = *state;
    start(f);
    /* Explicit reloads call back even when nothing changed (SIGHUP, POST /admin/reload). */
    rt_file_source_reload(f->src);
    run_until_calls(f, 1);
    assert_string_equal(last_id(f), "v0");
    rt_file_source_reload(f->src);
    rt_file_source_reload(f->src); /* while the first read runs: read again after it */
    run_until_calls(f, 3);
    run_for(f, QUIET_MS);
    assert_int_equal(f->calls, 3);
    assert_int_equal(f->tables, 3);

    /* The same content renamed over again is no news after a delivered table... */
    rename_over(f, doc_with_id("v0"));
    run_for(f, QUIET_MS);
    assert_int_equal(f->calls, 3);
    /* ...different content is. */
    rename_over(f, doc_with_id("v1"));
    run_until_calls(f, 4);
    assert_string_equal(last_id(f), "v1");
}

static void test_write_back(void **state)
{
    fixture *f = *state;
    char err[512];
    start(f);
    assert_int_equal(chmod(f->file, 0600), 0);

    /* An admin change: table -> document -> file. The write's own event is not news. */
    rt_table *t = rt_table_load_file(f->file, UPSTREAMS, 3, err, sizeof(err));
    assert_non_null(t);
    rt_table *n = rt_table_flip(t, "v0", "order-service", err, sizeof(err));
    assert_non_null(n);
    json_t *doc = rt_table_to_json(n);
    assert_int_equal(rt_file_source_write(f->src, doc, err, sizeof(err)), 0);
    run_for(f, QUIET_MS);
    assert_int_equal(f->calls, 0);

    /* What was written: the same table, the mode kept, a final newline, no temporary left. */
    struct stat st;
    assert_int_equal(stat(f->file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    rt_table *back = rt_table_load_file(f->file, UPSTREAMS, 3, err, sizeof(err));
    assert_non_null(back);
    json_t *doc2 = rt_table_to_json(back);
    assert_true(json_equal(doc, doc2));
    assert_int_equal(rt_table_route(back, 0)->upstream_index, 2);
    size_t len = 0;
    FILE *fp = fopen(f->file, "rb");
    char text[4096];
    len = fread(text, 1, sizeof(text), fp);
    fclose(fp);
    assert_true(len > 2 && text[len - 1] == '\n' && text[len - 2] == '}');
    assert_non_null(memmem(text, len, "\n  \"routes\": [", 14)); /* indented for people */
    DIR *d = opendir(f->dir);
    struct dirent *e;
    int entries = 0;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            assert_string_equal(e->d_name, "routes.json");
            entries++;
        }
    }
    closedir(d);
    assert_int_equal(entries, 1);

    /* Someone else's edit after ours is news. */
    rename_over(f, doc_with_id("theirs"));
    run_until_calls(f, 1);
    assert_string_equal(last_id(f), "theirs");

    /* rt_file_write_atomic: a new file, and a directory that does not exist. */
    char other[160];
    snprintf(other, sizeof(other), "%s/new.json", f->dir);
    assert_int_equal(rt_file_write_atomic(other, doc, err, sizeof(err)), 0);
    rt_table *t3 = rt_table_load_file(other, UPSTREAMS, 3, err, sizeof(err));
    assert_non_null(t3);
    assert_int_equal(rt_file_write_atomic("/nonexistent-dir/x.json", doc, err, sizeof(err)),
                     -1);
    assert_string_equal(err, "/nonexistent-dir/x.json: cannot write: No such file or directory");
    run_for(f, QUIET_MS);
    assert_int_equal(f->calls, 1); /* new.json is not the watched file */

    json_decref(doc);
    json_decref(doc2);
    rt_table_unref(t);
    rt_table_unref(n);
    rt_table_unref(back);
    rt_table_unref(t3);
}

static void test_stop_in_callback(void **state)
{
    fixture *f = *state;
    start(f);
    f->stop_in_cb = 1;
    rename_over(f, doc_with_id("v1"));
    run_until_calls(f, 1);
    rename_over(f, doc_with_id("v2"));
    run_for(f, QUIET_MS);
    assert_int_equal(f->calls, 1);
    f->src = NULL; /* stopped and freed: teardown must not stop it again */
}

static void test_stop_while_loading(void **state)
{
    fixture *f = *state;
    start(f);
    rt_file_source_reload(f->src); /* queued on the threadpool */
    rt_file_source_stop(f->src);   /* no callback after this; freed once the read is done */
    f->src = NULL;
    run_for(f, QUIET_MS);
    assert_int_equal(f->calls, 0);

    /* Stopped during the debounce: the timer never fires. */
    start(f);
    rename_over(f, doc_with_id("v1"));
    run_for(f, 20);
    rt_file_source_stop(f->src);
    f->src = NULL;
    run_for(f, QUIET_MS);
    assert_int_equal(f->calls, 0);
}

static void test_start_errors(void **state)
{
    fixture *f = *state;
    rt_file_source *s = (rt_file_source *)1;
    assert_int_equal(rt_file_source_start(&f->loop, "/nonexistent-dir/routes.json", UPSTREAMS,
                                          3, 0, on_table, f, &s),
                     UV_ENOENT);
    assert_null(s);
    s = (rt_file_source *)1;
    assert_int_equal(rt_file_source_start(&f->loop, "/tmp/", UPSTREAMS, 3, 0, on_table, f, &s),
                     UV_EINVAL);
    assert_null(s);
    assert_int_equal(rt_file_source_start(&f->loop, f->file, UPSTREAMS, 3, 0, NULL, f, &s),
                     UV_EINVAL);
    /* A relative path watches the current directory. */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(f->dir), 0);
    assert_int_equal(rt_file_source_start(&f->loop, "routes.json", UPSTREAMS, 3, 0, on_table, f,
                                          &f->src),
                     0);
    rename_over(f, doc_with_id("rel"));
    run_until_calls(f, 1);
    assert_string_equal(last_id(f), "rel");
    assert_int_equal(chdir(cwd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rename_over_debounced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_in_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_while_loading, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
