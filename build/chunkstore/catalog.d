build/chunkstore/catalog.o: chunkstore/catalog.c chunkstore/catalog.h \
 chunkstore/store.h chunkstore/repo.h chunkstore/backend.h \
 chunkstore/chunker.h chunkstore/index.h chunkstore/pack.h \
 chunkstore/format.h common/buf.h chunkstore/crypto.h common/endian.h \
 common/hex.h common/log.h common/macro.h
chunkstore/catalog.h:
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
common/hex.h:
common/log.h:
common/macro.h:
