build/chunkstore/repo.o: chunkstore/repo.c chunkstore/repo.h \
 chunkstore/backend.h chunkstore/chunker.h chunkstore/index.h \
 chunkstore/pack.h chunkstore/format.h common/buf.h chunkstore/crypto.h \
 common/fs-util.h common/hex.h common/log.h common/macro.h
chunkstore/repo.h:
chunkstore/backend.h:
chunkstore/chunker.h:
chunkstore/index.h:
chunkstore/pack.h:
chunkstore/format.h:
common/buf.h:
chunkstore/crypto.h:
common/fs-util.h:
common/hex.h:
common/log.h:
common/macro.h:
