build/tools/pitr-snap.o: tools/pitr-snap.c chunkstore/catalog.h \
 chunkstore/store.h chunkstore/repo.h chunkstore/backend.h \
 chunkstore/chunker.h chunkstore/index.h chunkstore/pack.h \
 chunkstore/format.h common/buf.h chunkstore/read.h chunkstore/tree.h \
 common/log.h common/macro.h tools/common/cli.h
chunkstore/catalog.h:
chunkstore/store.h:
chunkstore/repo.h:
chunkstore/backend.h:
chunkstore/chunker.h:
chunkstore/index.h:
chunkstore/pack.h:
chunkstore/format.h:
common/buf.h:
chunkstore/read.h:
chunkstore/tree.h:
common/log.h:
common/macro.h:
tools/common/cli.h:
