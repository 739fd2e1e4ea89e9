build/chunkstore/read.o: chunkstore/read.c chunkstore/read.h \
 chunkstore/store.h chunkstore/repo.h chunkstore/backend.h \
 chunkstore/chunker.h chunkstore/index.h chunkstore/pack.h \
 chunkstore/format.h common/buf.h common/endian.h common/fs-util.h \
 common/hex.h common/log.h common/macro.h
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
common/hex.h:
common/log.h:
common/macro.h:
