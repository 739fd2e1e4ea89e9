# pitrfs build. Non-recursive: one static library per layer, thin main() files.
#   make            build everything
#   make check      install missing Debian packages, build, run unit + integration tests
#   make demo       install, build and show the product working end to end
#   make bench      benchmarks with references measured in the same run
#   make asan       the unit and integration tests under AddressSanitizer/UBSan
#   make valgrind   the unit tests under valgrind memcheck
#   make fuzz       every libFuzzer target of tests/fuzz/ for FUZZ_SECONDS (60) each, in build-fuzz
.DEFAULT_GOAL := all
comma := ,
BUILD ?= build
SAN   ?=
PREFIX ?= /usr/local

# Debian packages the build, the tests and the benchmarks need. `make deps` installs what is missing.
DEB_BUILD := build-essential pkg-config libssl-dev libzstd-dev libxxhash-dev liblmdb-dev \
             libjansson-dev libcmocka-dev libfuse3-dev libpq-dev libyaml-dev libevent-dev \
             libcurl4-openssl-dev
DEB_TEST  := zstd xxhash fuse3 lmdb-utils python3 python3-cryptography-vectors postgresql-15 valgrind \
             postgresql-client-15 e2fsprogs util-linux procps openssl curl strace acl attr
DEB_BENCH := borgbackup restic pgbackrest openssl
# libFuzzer and its sanitizer runtimes come with clang (tests/fuzz/, `make fuzz`, part of check).
DEB_FUZZ  := clang-14 libclang-rt-14-dev
PKGS := libcrypto libzstd libxxhash lmdb jansson

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
        -Wcast-qual -Wwrite-strings -Wvla -Wundef -Wpointer-arith -Wimplicit-fallthrough \
        -Wno-missing-field-initializers
FUSE_CFLAGS = $(shell pkg-config --cflags fuse3 2>/dev/null)
FUSE_LIBS   = $(shell pkg-config --libs fuse3 2>/dev/null)
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS  ?= -O2 -g
PROJ_CFLAGS = -std=gnu17 -I. -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -pthread $(WARN) $(PKG_CFLAGS) $(SAN_FLAGS)
DEPFLAGS    = -MMD -MP
ifneq ($(SAN),)
BUILD     := build-$(subst $(comma),-,$(SAN))
SAN_FLAGS := -O1 -fno-omit-frame-pointer -fsanitize=$(SAN) -fno-sanitize-recover=all
endif
$(BUILD)/common/%.o $(BUILD)/chunkstore/%.o: WARN += -Wconversion

objs = $(patsubst %.c,$(BUILD)/%.o,$(filter-out %/main.c,$(wildcard $(1)/*.c)))
$(BUILD)/libcommon.a:     $(call objs,common)
$(BUILD)/libchunkstore.a: $(call objs,chunkstore)
LIBS := $(BUILD)/libchunkstore.a $(BUILD)/libcommon.a

TOOLS := $(BUILD)/bin/pitr-snap $(BUILD)/bin/mount.pitrfs $(BUILD)/bin/pitr-agent
# agent/ speaks libpq to PostgreSQL and serves mutual-TLS HTTP with libevent; orchestrator/
# reads YAML and calls the agents with libcurl.
PQ_CFLAGS   = $(shell pkg-config --cflags libpq 2>/dev/null)
AGENT_LIBS  = $(shell pkg-config --libs libpq libevent_openssl libevent_pthreads libssl 2>/dev/null)
ORCH_LIBS   = $(shell pkg-config --libs yaml-0.1 libcurl 2>/dev/null) $(AGENT_LIBS)
$(BUILD)/libagent.a: $(call objs,agent)
$(BUILD)/bin/pitr-agent: $(BUILD)/agent/main.o $(BUILD)/libagent.a $(LIBS)
$(BUILD)/bin/pitr-agent: EXTRA_LIBS = $(AGENT_LIBS)
$(BUILD)/agent/%.o $(BUILD)/orchestrator/%.o $(BUILD)/tools/%.o $(BUILD)/tests/%.o: PROJ_CFLAGS += $(PQ_CFLAGS)
$(BUILD)/liborchestrator.a: $(call objs,orchestrator)
$(BUILD)/libpitrfs.a: $(call objs,fuse)
$(BUILD)/bin/mount.pitrfs: $(BUILD)/fuse/main.o $(BUILD)/libpitrfs.a $(LIBS)
$(BUILD)/bin/mount.pitrfs: EXTRA_LIBS = $(FUSE_LIBS)
$(BUILD)/fuse/%.o: PROJ_CFLAGS += $(FUSE_CFLAGS)
$(BUILD)/libtools.a: $(call objs,tools/common)
$(BUILD)/bin/pitr-snap: $(BUILD)/tools/pitr-snap.o $(BUILD)/tools/snap-cluster.o $(BUILD)/libtools.a $(BUILD)/liborchestrator.a \
                        $(BUILD)/libagent.a $(LIBS)
$(BUILD)/bin/pitr-snap: EXTRA_LIBS = $(ORCH_LIBS)

UNIT_TESTS := $(patsubst %.c,$(BUILD)/%,$(wildcard tests/unit/*/test-*.c))
TEST_HELPERS := $(patsubst %.c,$(BUILD)/%,$(wildcard tests/helpers/*.c))
$(UNIT_TESTS): $(BUILD)/%: $(BUILD)/%.o $(LIBS)
$(TEST_HELPERS): $(BUILD)/%: $(BUILD)/%.o $(BUILD)/liborchestrator.a $(BUILD)/libagent.a $(LIBS)
# Archives in layer order, upper layers first, whatever order the prerequisites came in.
LAYER_ARCHIVES = $(foreach l,tools orchestrator agent pitrfs chunkstore common,$(filter %/lib$(l).a,$^))
LINK = @mkdir -p $(@D) && $(CC) $(SAN_FLAGS) $(CFLAGS) $(LDFLAGS) -pthread -o $@ \
       $(filter %.o,$^) $(LAYER_ARCHIVES) $(PKG_LIBS) $(EXTRA_LIBS)
$(UNIT_TESTS): EXTRA_LIBS = -lcmocka
$(TEST_HELPERS): EXTRA_LIBS = $(ORCH_LIBS)
# Unit tests of the upper layers link their layer's library (and what it stands on).
$(filter $(BUILD)/tests/unit/agent/%,$(UNIT_TESTS)): $(BUILD)/libagent.a
$(filter $(BUILD)/tests/unit/agent/%,$(UNIT_TESTS)): EXTRA_LIBS = -lcmocka $(AGENT_LIBS)
$(filter $(BUILD)/tests/unit/orchestrator/%,$(UNIT_TESTS)): $(BUILD)/liborchestrator.a $(BUILD)/libagent.a
$(filter $(BUILD)/tests/unit/orchestrator/%,$(UNIT_TESTS)): EXTRA_LIBS = -lcmocka $(ORCH_LIBS)

all: $(TOOLS)
build-tests: $(TOOLS) $(UNIT_TESTS) $(TEST_HELPERS)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(PROJ_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(DEPFLAGS) -c -o $@ $<
$(BUILD)/lib%.a:
	@mkdir -p $(@D)
	$(AR) rcs $@ $^
$(BUILD)/bin/%:
	$(LINK)
$(UNIT_TESTS) $(TEST_HELPERS):
	$(LINK)

# Install only what is missing, so a machine that has everything never touches apt.
deps:
	@missing=$$(for p in $(DEB_BUILD) $(DEB_TEST) $(DEB_FUZZ) $(DEB_EXTRA); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    if [ "$$(id -u)" != 0 ]; then echo "error: missing packages and not root: $$missing" >&2; exit 1; fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
deps-bench:
	@$(MAKE) --no-print-directory deps DEB_EXTRA="$(DEB_BENCH)"

check: deps
	@$(MAKE) --no-print-directory build-tests check-headers check-layering
	@BUILD=$(BUILD) tests/run-tests.sh
	@$(MAKE) --no-print-directory fuzz-run FUZZ_SECONDS=$(CHECK_FUZZ_SECONDS)

asan:
	@$(MAKE) --no-print-directory check SAN=address,undefined

# Unit tests under valgrind's memcheck: any error or leak fails.
valgrind: deps
	@$(MAKE) --no-print-directory build-tests && mkdir -p $(BUILD)/test-logs
	@for t in $(UNIT_TESTS); do printf '%-60s' $$t; \
	  if PITR_TEST_DATA=tests/data valgrind -q --error-exitcode=99 --leak-check=full \
	     --errors-for-leak-kinds=definite,indirect $$t >$(BUILD)/test-logs/$$(basename $$t).valgrind.log 2>&1; then echo ok; \
	  else echo FAIL; tail -30 $(BUILD)/test-logs/$$(basename $$t).valgrind.log; exit 1; fi; done

# ---- fuzzing (tests/fuzz/README.md) ----
# The library and the targets are built again by clang with libFuzzer's coverage and
# AddressSanitizer/UBSan, in a build directory of their own (a sub-make with BUILD and CC
# changed, so the same rules serve). `make fuzz` fails on any crash, leak, hang or broken
# promise; check runs every target for CHECK_FUZZ_SECONDS.
FUZZ_BUILD   ?= build-fuzz
FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 60
CHECK_FUZZ_SECONDS ?= 5
# clang's -Wformat=2 also flags the vsnprintf of a function that passes its own format on.
FUZZ_CLANG_ONLY := -Wno-format-nonliteral
FUZZ_SAN := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_TARGETS := $(filter-out fuzz-common make-seeds,$(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/*.c)))
FUZZERS := $(patsubst %,$(BUILD)/tests/fuzz/%,$(FUZZ_TARGETS))
FUZZ_DEPS := $(BUILD)/tests/fuzz/fuzz-common.o $(BUILD)/liborchestrator.a $(BUILD)/libagent.a $(LIBS)
$(FUZZERS): $(BUILD)/tests/fuzz/%: $(BUILD)/tests/fuzz/%.o $(FUZZ_DEPS)
	@mkdir -p $(@D) && $(CC) $(subst fuzzer-no-link,fuzzer,$(SAN_FLAGS)) $(CFLAGS) $(LDFLAGS) -pthread -o $@ \
	    $(filter %.o,$^) $(LAYER_ARCHIVES) $(PKG_LIBS) $(ORCH_LIBS)
$(BUILD)/tests/fuzz/make-seeds: $(BUILD)/tests/fuzz/make-seeds.o $(FUZZ_DEPS)
	@mkdir -p $(@D) && $(CC) $(SAN_FLAGS) $(CFLAGS) $(LDFLAGS) -pthread -o $@ \
	    $(filter %.o,$^) $(LAYER_ARCHIVES) $(PKG_LIBS) $(ORCH_LIBS)
fuzz-build-here: $(FUZZERS) $(BUILD)/tests/fuzz/make-seeds
fuzz-build: deps
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) \
	    CFLAGS="-g $(FUZZ_CLANG_ONLY)" SAN_FLAGS="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" fuzz-build-here
fuzz-run: fuzz-build
	@FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run-fuzz.sh $(FUZZ_TARGETS)
fuzz:
	@$(MAKE) --no-print-directory fuzz-run
# Rewrite the committed seed corpora (tests/fuzz/*/corpus) from the generator.
fuzz-seeds: fuzz-build
	@$(FUZZ_BUILD)/tests/fuzz/make-seeds tests/fuzz

bench: deps-bench
	@$(MAKE) --no-print-directory all $(TEST_HELPERS)
	@BUILD=$(BUILD) tests/bench/run-bench.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) tests/demo.sh

check-headers:
	@for h in $(wildcard common/*.h chunkstore/*.h tools/common/*.h); do \
	  echo "#include \"$$h\"" | $(CC) $(PROJ_CFLAGS) -fsyntax-only -x c - || exit 1; done
	@for h in $(wildcard fuse/*.h); do \
	  echo "#include \"$$h\"" | $(CC) $(PROJ_CFLAGS) $(FUSE_CFLAGS) -fsyntax-only -x c - || exit 1; done
	@for h in $(wildcard agent/*.h orchestrator/*.h); do \
	  echo "#include \"$$h\"" | $(CC) $(PROJ_CFLAGS) $(PQ_CFLAGS) -fsyntax-only -x c - || exit 1; done
check-layering:
	@! grep -rnE '#include "(chunkstore|fuse|orchestrator|agent|tools)/' common
	@! grep -rnE '#include "(fuse|orchestrator|agent|tools)/|libpq' chunkstore
	@! grep -rnE '#include "(orchestrator|agent|tools)/' fuse
	@! grep -rnE '#include "(orchestrator|fuse|tools)/' agent
	@! grep -rnE '#include "(fuse|tools)/' orchestrator

# Everything goes under PREFIX, but mount(8) looks for a mount.<type> helper in /sbin (and
# /sbin/fs.d, /sbin/fs) only, whatever PREFIX is. So mount.pitrfs goes to $(PREFIX)/sbin and,
# unless PREFIX is / or /usr, a symbolic link /sbin/mount.pitrfs points at it: with PREFIX=/
# that is /sbin itself, and /usr/sbin is /sbin on a merged-/usr system (Debian 12 and later).
# uninstall removes what install put there: the files, and the link if it still points at
# this PREFIX's mount.pitrfs; directories stay.
INSTALL_ROOT      := $(patsubst %/,%,$(PREFIX))
INSTALL_MAN1      := $(notdir $(wildcard docs/man/*.1))
INSTALL_MAN8      := $(notdir $(wildcard docs/man/*.8))
MOUNT_HELPER      := $(INSTALL_ROOT)/sbin/mount.pitrfs
MOUNT_HELPER_LINK := $(if $(filter x x/usr,x$(INSTALL_ROOT)),,/sbin/mount.pitrfs)
install: all
	install -d $(DESTDIR)$(INSTALL_ROOT)/bin $(DESTDIR)$(INSTALL_ROOT)/sbin \
	    $(DESTDIR)$(INSTALL_ROOT)/share/man/man1 $(DESTDIR)$(INSTALL_ROOT)/share/man/man8
	install -m 755 $(BUILD)/bin/pitr-snap $(BUILD)/bin/pitr-agent $(DESTDIR)$(INSTALL_ROOT)/bin/
	install -m 755 $(BUILD)/bin/mount.pitrfs $(DESTDIR)$(MOUNT_HELPER)
	install -m 644 $(addprefix docs/man/,$(INSTALL_MAN1)) $(DESTDIR)$(INSTALL_ROOT)/share/man/man1/
	install -m 644 $(addprefix docs/man/,$(INSTALL_MAN8)) $(DESTDIR)$(INSTALL_ROOT)/share/man/man8/
ifneq ($(MOUNT_HELPER_LINK),)
	install -d $(DESTDIR)/sbin
	ln -sfn $(MOUNT_HELPER) $(DESTDIR)$(MOUNT_HELPER_LINK)
	@echo "note: $(MOUNT_HELPER_LINK) -> $(MOUNT_HELPER) is outside PREFIX: mount(8) looks for mount.pitrfs in /sbin only"
else ifeq ($(INSTALL_ROOT),/usr)
	@echo "note: mount(8) finds $(MOUNT_HELPER) only where /sbin is /usr/sbin (merged /usr)"
endif
.PHONY: uninstall
uninstall:
	rm -f $(addprefix $(DESTDIR)$(INSTALL_ROOT)/bin/,pitr-snap pitr-agent) $(DESTDIR)$(MOUNT_HELPER) \
	    $(addprefix $(DESTDIR)$(INSTALL_ROOT)/share/man/man1/,$(INSTALL_MAN1)) \
	    $(addprefix $(DESTDIR)$(INSTALL_ROOT)/share/man/man8/,$(INSTALL_MAN8))
ifneq ($(MOUNT_HELPER_LINK),)
	@link=$(DESTDIR)$(MOUNT_HELPER_LINK); \
	if [ -L "$$link" ] && [ "$$(readlink "$$link")" = "$(MOUNT_HELPER)" ]; then \
	    echo "rm -f $$link"; rm -f "$$link"; \
	elif [ -e "$$link" ] || [ -L "$$link" ]; then \
	    echo "note: $$link is not the link to $(MOUNT_HELPER) that install made: left alone"; \
	fi
endif

format:
	clang-format -i $$(git ls-files '*.c' '*.h')
clean:
	rm -rf build build-*
.PHONY: all build-tests deps deps-bench check asan valgrind bench demo check-headers check-layering install format clean \
        fuzz fuzz-run fuzz-build fuzz-build-here fuzz-seeds
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
