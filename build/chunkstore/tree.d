build/chunkstore/tree.o: chunkstore/tree.c chunkstore/tree.h \
 chunkstore/read.h chunkstore/store.h chunkstore/repo.h \
 chunkstore/backend.h chunkstore/chunker.h chunkstore/index.h \
 chunkstore/pack.h chunkstore/format.h common/buf.h common/endian.h \
 common/fs-util.h common/log.h common/macro.h
chunkstore/tree.h:
chunkstore/read.h:
chunkstore/store.h:
chunkstore/repo.h:
chunkstore/backend.h:
chunkstore/chunker.h:
chunkstore/index.h:
chunkstore/pack.h:
chunkstore/format.h:
common/buf.h:
common/endian.h:
common/fs-util.h:
common/log.h:
common/macro.h:
