build/common/log.o: common/log.c common/log.h common/macro.h
common/log.h:
common/macro.h:
