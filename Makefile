# Strangler-fig API gateway. `make run` and `make test` do all set-up on a fresh Debian box.
#   make            build build/gateway, build/gatewayctl, build/mockd
#   make deps       apt-get only the Debian packages that are missing (sudo when not root)
#   make run        deps + build + start the demo stack (mockd x4 + gateway on :8080 and
#                   https :8443 with a self-signed certificate made into build/demo/tls/)
#   make test       deps + build + unit tests + integration tests, plain and ASan+UBSan;
#                   the multi-threaded subset under ThreadSanitizer; a valgrind subset
#   make bench      gateway vs nginx vs HAProxy (see bench/)
#   SANITIZE=1      ASan+UBSan build, into build/san/
#   SANITIZE=thread ThreadSanitizer build, into build/tsan/
#   make fuzz       libFuzzer drivers (clang) into build/fuzz/, each run FUZZ_SECONDS (60)
#   OUT=DIR         build into DIR instead (parallel work trees share one checkout)

CC       ?= gcc
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
  OUT      ?= build/san
  OPT      := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDSAN    := -fsanitize=address,undefined
else ifeq ($(SANITIZE),thread)
  # ThreadSanitizer: llhttp is compiled with it too, so races on its settings are seen
  OUT      ?= build/tsan
  OPT      := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
  LDSAN    := -fsanitize=thread
else ifeq ($(SANITIZE),fuzz)
  # libFuzzer drivers (tests/fuzz/, `make fuzz`): clang, the project's code instrumented for
  # coverage, ASan+UBSan; never part of the normal build
  CC       := clang
  OUT      ?= build/fuzz
  OPT      := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
              -fno-sanitize-recover=undefined
  LDSAN    := -fsanitize=fuzzer,address,undefined
else
  OUT      ?= build
  OPT      := -O2 -g
  LDSAN    :=
endif

LLHTTP_DIR := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp
PKGS       := libuv jansson libpq hiredis libssl libcrypto libnghttp2
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -luv -ljansson -lpq -lhiredis -lssl -lcrypto -lnghttp2)

CFLAGS  := -std=c11 -D_GNU_SOURCE $(OPT) -Wall -Wextra -Werror -pthread -I. -I$(LLHTTP_INC) $(PKG_CFLAGS)
LDLIBS  := $(PKG_LIBS) -lpthread -lm

# Rooms, lowest first: http/ (the HTTP library) <- routes/ <- composers/ <- gateway/ (the
# application); ctl/ is gatewayctl. A room includes headers only of rooms before it.
CTL_SRCS := $(wildcard ctl/*.c)
LIB_SRCS := $(wildcard http/*.c) $(wildcard routes/*.c) $(wildcard composers/*.c) \
            $(filter-out gateway/main.c,$(wildcard gateway/*.c))
# The dashboard's page (gateway/dashboard/*.html|js|css) compiled in as C arrays.
DASH_FILES := $(wildcard gateway/dashboard/*.html gateway/dashboard/*.js gateway/dashboard/*.css)
LIB_OBJS := $(LIB_SRCS:%.c=$(OUT)/obj/%.o) $(OUT)/obj/gen/dashboard_assets.o
LLHTTP_OBJS := $(OUT)/obj/llhttp/api.o $(OUT)/obj/llhttp/http.o $(OUT)/obj/llhttp/llhttp.o
MOCKD_SRCS := $(wildcard tests/mockd/*.c)
UNIT_SRCS  := $(wildcard tests/unit/*/test_*.c) # tests/unit/ mirrors the source tree
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(OUT)/tests/%)

FUZZ_SRCS  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS  := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)

.PHONY: all deps run test unit integration bench clean check-deps fuzz fuzz-bins
all: $(OUT)/gateway $(OUT)/gatewayctl $(OUT)/mockd

$(OUT)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# Third-party llhttp from Debian's node-llhttp: compiled, never copied into the repo.
$(OUT)/obj/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	@echo "  CC    $< (Debian node-llhttp)"
	@$(CC) -std=c11 $(OPT) -w -I$(LLHTTP_INC) -c $< -o $@

$(OUT)/gen/dashboard_assets.c: $(DASH_FILES) gateway/dashboard/embed.sh
	@echo "  EMBED $(DASH_FILES)"
	@sh gateway/dashboard/embed.sh $@ $(DASH_FILES)

$(OUT)/obj/gen/dashboard_assets.o: $(OUT)/gen/dashboard_assets.c
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -c $< -o $@

$(OUT)/libgw.a: $(LIB_OBJS) $(LLHTTP_OBJS)
	@rm -f $@
	@ar rcs $@ $^

$(OUT)/gateway: $(OUT)/obj/gateway/main.o $(OUT)/libgw.a
	$(CC) $(LDSAN) -pthread -o $@ $^ $(LDLIBS)

$(OUT)/gatewayctl: $(CTL_SRCS:%.c=$(OUT)/obj/%.o) $(OUT)/libgw.a
	$(CC) $(LDSAN) -pthread -o $@ $^ $(LDLIBS)

$(OUT)/mockd: $(MOCKD_SRCS:%.c=$(OUT)/obj/%.o) $(OUT)/libgw.a
	$(CC) $(LDSAN) -pthread -o $@ $^ $(LDLIBS)

$(OUT)/tests/%: $(OUT)/obj/tests/unit/%.o $(OUT)/libgw.a
	@mkdir -p $(dir $@)
	$(CC) $(LDSAN) -pthread -o $@ $^ $(LDLIBS) -lcmocka

# libFuzzer drivers: SANITIZE=fuzz (clang), one binary per tests/fuzz/fuzz_*.c
$(OUT)/fuzz_%: $(OUT)/obj/tests/fuzz/fuzz_%.o $(OUT)/libgw.a
	$(CC) $(LDSAN) -pthread -o $@ $^ $(LDLIBS) -ldl
.PRECIOUS: $(OUT)/obj/tests/fuzz/fuzz_%.o

-include $(shell find $(OUT)/obj -name '*.d' 2>/dev/null)

# ---- set-up ---------------------------------------------------------------------------
DEB_PKGS := build-essential pkg-config libuv1-dev node-llhttp libpq-dev libhiredis-dev \
            libjansson-dev libcmocka-dev postgresql redis-server redis-sentinel python3 curl valgrind \
            clang libclang-rt-14-dev libssl-dev openssl chromium chromium-driver python3-selenium \
            libnghttp2-dev nghttp2-client python3-websockets
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	else echo "deps: all Debian packages present"; fi

run: deps
	@$(MAKE) --no-print-directory all
	@tests/demo.sh

unit: $(UNIT_BINS)
	@python3 tests/run_unit.py $(UNIT_BINS)

integration: all
	@python3 tests/integration/run.py --build $(OUT)

# Plain build: unit + integration. Then ASan+UBSan build: unit + integration again. Then the
# ThreadSanitizer build: unit + the multi-threaded integration subset (tests/run_all.py).
# The four builds use every core (JOBS): serial, they were a fifth of make test's time.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) all $(UNIT_BINS)
	@$(MAKE) --no-print-directory -j$(JOBS) SANITIZE=1 all build/san/libgw.a $(UNIT_BINS:build/%=build/san/%)
	@$(MAKE) --no-print-directory -j$(JOBS) SANITIZE=thread all build/tsan/libgw.a $(UNIT_BINS:build/%=build/tsan/%)
	@$(MAKE) --no-print-directory -j$(JOBS) fuzz-bins
	@python3 tests/run_all.py

# Fuzzing (docs/security.md): each driver runs FUZZ_SECONDS on its seed corpus
# (tests/fuzz/corpus/<driver>, read only); what it finds new goes to build/fuzz/corpus/<driver>,
# crashes to build/fuzz/crashes/. `make test` runs each driver for a short fixed number of runs.
FUZZ_SECONDS ?= 60
fuzz-bins:
	@$(MAKE) --no-print-directory SANITIZE=fuzz $(FUZZ_BINS)

fuzz: deps fuzz-bins
	@set -e; for b in $(FUZZ_BINS); do d=$$(basename $$b); \
	  mkdir -p build/fuzz/corpus/$$d build/fuzz/crashes; \
	  echo "==== $$d: $(FUZZ_SECONDS) s"; \
	  $$b -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=build/fuzz/crashes/$$d- \
	    build/fuzz/corpus/$$d tests/fuzz/corpus/$$d; \
	done

bench: deps
	@$(MAKE) --no-print-directory all
	@bench/run.sh

clean:
	rm -rf build
