build/chunkstore/store.o: chunkstore/store.c chunkstore/store.h \
 chunkstore/repo.h chunkstore/backend.h chunkstore/chunker.h \
 chunkstore/index.h chunkstore/pack.h chunkstore/format.h common/buf.h \
 chunkstore/crypto.h common/endian.h common/fs-util.h common/log.h \
 common/macro.h
chunkstore/store.h:
chunkstore/repo.h:
chunkstore/backend.h:
chunkstore/chunker.h:
chunkstore/index.h:
chunkstore/pack.h:
chunkstore/format.h:
common/buf.h:
chunkstore/crypto.h:
common/endian.h:
common/fs-util.h:
common/log.h:
common/macro.h:
